package ingest

import (
	"time"

	"github.com/segmentio/encoding/json"
)

// Event types. The set is extensible: a new type needs a topic (TopicFor) and
// its validation rules.
const (
	TypeSearch         = "search"
	TypeBooking        = "booking"
	TypeCancel         = "cancel"
	TypeSupplyUpdate   = "supply_update"
	TypeExternalSignal = "external_signal"
)

// External signal names (Event.Signal).
const (
	SignalWeather = "weather" // 0 clear … 1 severe
	SignalTraffic = "traffic" // 0 free-flowing … 1 gridlock
	SignalEvent   = "event"   // 1 while a local event is under way, else 0
)

// Experiment says which pricing experiment and variant an event belongs to.
type Experiment struct {
	ID      string `json:"id"`
	Variant string `json:"variant"`
}

// Event is one marketplace event as clients send it and as it travels on
// Kafka (JSON, key = RegionID). On Kafka, UserID is always empty: the intake
// replaces it by UserHash, a keyed hash, before anything is stored or logged.
type Event struct {
	EventID         string      `json:"eventId"`
	Type            string      `json:"type"`
	RegionID        string      `json:"regionId"`
	Timestamp       time.Time   `json:"timestamp"` // event time
	UserID          string      `json:"userId,omitempty"`
	UserHash        string      `json:"userHash,omitempty"`
	ProductType     string      `json:"productType,omitempty"`
	Price           *float64    `json:"price,omitempty"`           // bookings
	AvailableSupply *float64    `json:"availableSupply,omitempty"` // supply updates
	Signal          string      `json:"signal,omitempty"`          // external signals
	Value           *float64    `json:"value,omitempty"`           // external signals
	QuoteID         string      `json:"quoteId,omitempty"`
	Experiment      *Experiment `json:"experiment,omitempty"`

	// Set by the intake.
	ReceivedAt time.Time `json:"receivedAt,omitzero"`
	// Backfill marks a replayed event older than the accepted lateness: it
	// skips the lateness check and the live features and lands in
	// ClickHouse only.
	Backfill bool `json:"backfill,omitempty"`
}

// TopicFor is the Kafka topic of an event type.
func TopicFor(eventType string) string {
	switch eventType {
	case TypeSupplyUpdate:
		return TopicSupplyEvents
	case TypeExternalSignal:
		return TopicExternalEvents
	default:
		return TopicUserEvents
	}
}

// EventTopics are the topics that carry Events.
var EventTopics = []string{TopicUserEvents, TopicSupplyEvents, TopicExternalEvents}

// Marshal encodes an event for Kafka.
func (e *Event) Marshal() ([]byte, error) { return json.Marshal(e) }

// DecodeEvent decodes an event read from Kafka.
func DecodeEvent(b []byte) (Event, error) {
	var e Event
	err := json.Unmarshal(b, &e)
	return e, err
}
