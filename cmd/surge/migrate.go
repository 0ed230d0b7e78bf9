package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newMigrateCmd() *cobra.Command {
	var cfg config
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply the ClickHouse migrations (safe to run twice)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := cfg.logger()
			if err != nil {
				return err
			}
			ch, err := openClickHouse(cmd.Context(), cfg, logger)
			if err != nil {
				return err
			}
			defer ch.Close()
			fmt.Fprintln(cmd.OutOrStdout(), "migrations up to date")
			return nil
		},
	}
	cfg.addConnFlags(cmd.Flags())
	return cmd
}
