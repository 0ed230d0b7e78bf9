// Command surge is the demand forecasting and dynamic pricing service: one
// binary whose subcommands serve prices, run the local development stack,
// apply migrations and train models.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "surge:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "surge",
		Short: "Real-time demand forecasting and dynamic pricing for marketplaces",
		Long: `surge forecasts demand per region with a model it trains itself and turns
forecast, supply and pricing rules into an explainable price, served over GraphQL.

Every flag can also be set by the environment variable named in its help.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd.Flags())
		},
	}
	root.AddCommand(newServeCmd(), newDevCmd(), newMigrateCmd(), newTrainCmd(), newLoadtestCmd(), newBrokerCmd(), newReplayCmd(), newSimulateCmd(), newWatchIngestCmd(), newRepriceCmd(), newKeysCmd(), newConsumeCmd())
	return root
}
