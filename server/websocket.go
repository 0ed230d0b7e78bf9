package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/coder/websocket"

	"github.com/surgeworks/surge/auth"
	"github.com/surgeworks/surge/live"
)

// closeBadMessage is graphql-transport-ws's close code for a malformed or
// unexpected message (gqlgen closes with 1002, which the protocol reserves
// for the websocket layer); closeForbidden refuses a connection_init whose
// key is not valid.
const (
	closeBadMessage = 4400
	closeForbidden  = 4403
)

// wsImplementation accepts websockets with coder/websocket, bounding each
// write by a timeout, so that a client that stops reading is disconnected
// instead of holding its subscriptions' goroutines forever.
type wsImplementation struct{ writeTimeout time.Duration }

func (i wsImplementation) Accept(w http.ResponseWriter, r *http.Request, o transport.WebsocketAcceptOptions) (transport.WebsocketConn, error) {
	for k, vs := range o.ResponseHeader {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	// The default origin check (the Origin's host is the request's) stays
	// on: a page elsewhere cannot subscribe with a visitor's cookies.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: o.Subprotocols})
	if err != nil {
		return nil, err
	}
	return &wsConn{conn: c, writeTimeout: i.writeTimeout}, nil
}

type wsConn struct {
	conn         *websocket.Conn
	writeTimeout time.Duration

	mu       sync.Mutex
	deadline *time.Timer
	closing  bool
}

func (c *wsConn) NextReader() (int, io.Reader, error) {
	typ, data, err := c.conn.Read(context.Background())
	if err != nil {
		switch websocket.CloseStatus(err) {
		case websocket.StatusNormalClosure, websocket.StatusNoStatusRcvd:
			return int(typ), nil, transport.ErrWebsocketClosed
		}
		return int(typ), nil, err
	}
	if c.conn.Subprotocol() == transportWS && !validTransportWS(data) {
		// gqlgen ends the connection with 1000 on a message it cannot
		// decode once initialised; the protocol says 4400.
		_ = c.WriteClose(closeBadMessage, "invalid message")
		return int(typ), nil, transport.ErrWebsocketClosed
	}
	return int(typ), bytes.NewReader(data), nil
}

const transportWS = "graphql-transport-ws"

// validTransportWS tells whether a message is JSON with a type of the
// graphql-transport-ws protocol.
func validTransportWS(data []byte) bool {
	var m struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(data, &m) != nil {
		return false
	}
	switch m.Type {
	case "connection_init", "ping", "pong", "subscribe", "complete":
		return true
	}
	return false
}

func (c *wsConn) WriteJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.writeTimeout)
	defer cancel()
	return c.conn.Write(ctx, websocket.MessageText, b)
}

// WriteClose starts the close handshake in the background (it waits for the
// peer), with 4400 in place of gqlgen's 1002 on graphql-transport-ws.
func (c *wsConn) WriteClose(code int, reason string) error {
	if code == transport.WebsocketCloseProtocolError && c.conn.Subprotocol() == transportWS {
		code = closeBadMessage
	}
	c.mu.Lock()
	c.stopDeadline()
	if c.closing {
		c.mu.Unlock()
		return nil
	}
	c.closing = true
	c.mu.Unlock()
	go func() { _ = c.conn.Close(websocket.StatusCode(code), reason) }()
	return nil
}

func (c *wsConn) Close() error {
	c.mu.Lock()
	c.stopDeadline()
	closing := c.closing
	c.mu.Unlock()
	if closing {
		return nil // the close handshake owns the connection
	}
	return c.conn.CloseNow()
}

func (c *wsConn) Subprotocol() string      { return c.conn.Subprotocol() }
func (c *wsConn) SetReadLimit(limit int64) { c.conn.SetReadLimit(limit) }

// SetReadDeadline closes the connection when no message arrives in time
// (gqlgen's missing-pong timeout).
func (c *wsConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopDeadline()
	if !t.IsZero() {
		c.deadline = time.AfterFunc(time.Until(t), func() { _ = c.conn.CloseNow() })
	}
	return nil
}

func (c *wsConn) stopDeadline() {
	if c.deadline != nil {
		c.deadline.Stop()
		c.deadline = nil
	}
}

// wsInit authenticates a connection_init: a key or token in its payload
// (X-Api-Key, X-Admin-Key or Authorization: Bearer, names matched without
// case, at the top level or under "headers") replaces the caller of the
// upgrade request; an invalid one closes the socket with 4403. Without one
// the caller stays the upgrade request's (its headers, else anonymous).
func wsInit(authn *auth.Authenticator) transport.WebsocketInitFunc {
	return func(ctx context.Context, p transport.InitPayload) (context.Context, *transport.InitPayload, error) {
		key := payloadKey(p)
		if h, ok := p["headers"].(map[string]any); ok && key == "" {
			key = payloadKey(h)
		}
		if key != "" {
			caller, err := authn.Token(ctx, key, "")
			if err != nil {
				return transport.WithWebsocketCloseCode(ctx, closeForbidden), nil, err
			}
			ctx = auth.WithPrincipal(ctx, caller)
		}
		return live.WithConnection(context.WithValue(ctx, wsKey{}, true)), nil, nil
	}
}

// payloadKey finds the credential in a payload, its entry names matched
// without case: X-Api-Key or X-Admin-Key, else a bearer token in
// Authorization.
func payloadKey(p map[string]any) string {
	var bearer string
	for k, v := range p {
		s, _ := v.(string)
		switch {
		case strings.EqualFold(k, auth.APIKeyHeader), strings.EqualFold(k, auth.AdminKeyHeader):
			return s
		case strings.EqualFold(k, "Authorization"):
			bearer = auth.BearerToken(s)
		}
	}
	return bearer
}
