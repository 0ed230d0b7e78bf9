package main

import (
	"context"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/surgeworks/surge/auth"
)

func newKeysCmd() *cobra.Command {
	var cfg config
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Create, list and revoke API keys (stored in ClickHouse, seen by every replica at once)",
		Long: `keys manages the API keys of the service. A key holds roles: client (prices,
forecasts, bookings, live surge), ingest (demand events), supply (supply updates and
external signals too), analyst (history, features, accuracy, audits, experiment
results) and admin (everything, and rules, experiments, models, rollouts). It belongs
to a client: the client's rate-limit bucket and the namespace of its event ids, shared
by the keys of one client, so a rotation (create the new key, move the senders, revoke
the old one) keeps both. Only a hash of each key is stored: the key is printed once.
Replicas learn of a change at once (Redis pub/sub), at the latest within 30 s.`,
		Example: `  surge keys create --client acme --roles supply --name "acme backend"
  surge keys list
  surge keys revoke 3f9c0a1b`,
	}
	cfg.addConnFlags(cmd.PersistentFlags())
	open := func(ctx context.Context) (*auth.Keys, func(), error) {
		logger, err := cfg.logger()
		if err != nil {
			return nil, nil, err
		}
		ch, err := openClickHouse(ctx, cfg, logger)
		if err != nil {
			return nil, nil, err
		}
		rdb := newRedis(cfg)
		return auth.NewKeys(ch, rdb, cfg.ClickHouseDatabase, auth.KeysOptions{Logger: logger}), func() { rdb.Close(); ch.Close() }, nil
	}

	var client, name, roles string
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a key and print it (once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := auth.ParseRoles(roles)
			if err != nil {
				return fmt.Errorf("--roles: %w", err)
			}
			keys, done, err := open(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			by := os.Getenv("USER")
			if by == "" {
				by = "surge keys"
			}
			secret, k, err := keys.Create(cmd.Context(), client, name, r, by)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "created key %s of client %s with roles %s; it is shown only now:\n", k.ID, k.Client, k.Roles)
			fmt.Fprintln(cmd.OutOrStdout(), secret)
			return nil
		},
	}
	create.Flags().StringVar(&client, "client", "", "owner of the key: letters, digits, '.', '_', '-' (required)")
	create.Flags().StringVar(&name, "name", "", "what the key is for (shown in logs and audit records)")
	create.Flags().StringVar(&roles, "roles", "", "comma-separated roles: client, ingest, supply, analyst, admin (required)")
	_ = create.MarkFlagRequired("client")
	_ = create.MarkFlagRequired("roles")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the keys (ids, clients, roles; never the keys)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			keys, done, err := open(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			ks, err := keys.List(cmd.Context())
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tCLIENT\tNAME\tROLES\tCREATED\tBY\tREVOKED")
			for _, k := range ks {
				revoked := "-"
				if !k.RevokedAt.IsZero() {
					revoked = k.RevokedAt.Format(time.RFC3339)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Client, k.Name, k.Roles, k.CreatedAt.Format(time.RFC3339), k.CreatedBy, revoked)
			}
			return w.Flush()
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a key by its id (or the whole key)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			keys, done, err := open(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			k, err := keys.Revoke(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked key %s of client %s\n", k.ID, k.Client)
			return nil
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}
