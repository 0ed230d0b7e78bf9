package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/surgeworks/surge/analytics"
	"github.com/surgeworks/surge/pricing"
	"github.com/surgeworks/surge/quotes"
)

func newRepriceCmd() *cobra.Command {
	var (
		cfg     config
		quoteID string
		since   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "reprice",
		Short: "Recompute quotes bit for bit from their decision records in ClickHouse",
		Long: `reprice reads the decision record of a quote (--quote) or of every quote of the
last --since from the audit trail (ClickHouse pricing_decisions) and recomputes the price
with this build's pricing engine. It prints what it found and exits with an error when
a recomputed price differs from the one quoted.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (quoteID == "") == (since <= 0) {
				return errors.New("give one of --quote or --since")
			}
			logger, err := cfg.logger()
			if err != nil {
				return err
			}
			ch, err := openClickHouse(cmd.Context(), cfg, logger)
			if err != nil {
				return err
			}
			defer ch.Close()
			d := analytics.NewDecisions(ch)
			out := cmd.OutOrStdout()
			if quoteID != "" {
				rec, err := d.DecisionByQuote(cmd.Context(), quoteID)
				if err != nil {
					return err
				}
				a, err := quotes.Reprice(rec)
				if err != nil {
					return err
				}
				b, _ := json.MarshalIndent(map[string]any{
					"quoteId": a.QuoteID, "at": a.At, "regionId": a.RegionID, "productType": a.ProductType,
					"surgeMultiplier": a.Multiplier, "price": a.Price, "recomputedMultiplier": a.Recomputed.Multiplier,
					"recomputedPrice": a.Recomputed.Price, "identical": a.Identical, "engineVersion": a.EngineVersion,
					"currentEngineVersion": pricing.EngineVersion, "ruleVersion": a.RuleVersion, "modelVersion": a.ModelVersion,
				}, "", "  ")
				fmt.Fprintln(out, string(b))
				if !a.Identical {
					return fmt.Errorf("quote %s: recomputed %v × → %v, quoted %v × → %v", a.QuoteID, a.Recomputed.Multiplier, a.Recomputed.Price, a.Multiplier, a.Price)
				}
				return nil
			}
			var checked, identical, otherEngine int
			var differ []string
			err = d.DecisionsSince(cmd.Context(), time.Now().Add(-since), func(rec []byte) error {
				checked++
				a, err := quotes.Reprice(rec)
				switch {
				case err != nil:
					differ = append(differ, err.Error())
				case a.Identical:
					identical++
				case a.EngineVersion != pricing.EngineVersion:
					otherEngine++
				default:
					differ = append(differ, a.QuoteID)
				}
				return nil
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "quotes: %d, recomputed identically: %d, priced by another engine version: %d, differing: %d\n", checked, identical, otherEngine, len(differ))
			if len(differ) > 0 {
				return fmt.Errorf("%d quotes do not recompute identically, e.g. %s", len(differ), differ[0])
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&quoteID, "quote", "", "the quote id to recompute")
	cmd.Flags().DurationVar(&since, "since", 0, "recompute every quote of this last period (e.g. 1h)")
	cfg.addConnFlags(cmd.Flags())
	return cmd
}
