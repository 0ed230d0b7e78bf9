// Example operations of the playground, one tab each. test/examples.test.mjs
// validates every one against ../schema.graphqls.

export interface Example {
  name: string;
  query: string;
  variables?: string;
  headers?: string;
}

const json = (v: unknown) => JSON.stringify(v, null, 2);

export function examples(now: Date = new Date()): Example[] {
  const hourAgo = new Date(now.getTime() - 3600_000);
  return [
    {
      name: 'price',
      query: `# The price of one product in one region now, with the factors that add up to the multiplier.
query Price($input: PriceInput!) {
  price(input: $input) {
    quoteId price currency basePrice surgeMultiplier
    demandForecast forecastHorizonMinutes forecastSource supply modelVersion
    degraded warnings validUntil
    factors { name contribution description }
    experiment { id variant }
  }
}`,
      variables: json({ input: { regionId: 'berlin', productType: 'ride' } }),
    },
    {
      name: 'prices',
      query: `# Many prices in one request (at most 100): features and forecasts are fetched in batches.
query Prices {
  prices(inputs: [{regionId: "paris", productType: "xl"}, {regionId: "sf", productType: "delivery"}]) {
    regionId productType price currency surgeMultiplier forecastSource
  }
}`,
    },
    {
      name: 'forecast',
      query: `query Forecast($regionId: ID!, $horizon: Int) {
  forecast(regionId: $regionId, horizonMinutes: $horizon) {
    demand lower upper horizonMinutes source modelVersion coldStart degraded warnings generatedAt trainingData
  }
}`,
      variables: json({ regionId: 'nyc', horizon: 60 }),
    },
    {
      name: 'factorBreakdown',
      query: `# Explains a quote while it is valid: paste a quoteId from the price tab.
query FactorBreakdown($quoteId: ID!) {
  factorBreakdown(quoteId: $quoteId) { name contribution description }
}`,
      variables: json({ quoteId: 'paste a quoteId here' }),
    },
    {
      name: 'demandHistory',
      query: `query DemandHistory($regionId: ID!, $from: Time!, $to: Time!) {
  demandHistory(regionId: $regionId, from: $from, to: $to, granularity: MINUTE) {
    bucket searches bookings cancels supply
  }
}`,
      variables: json({ regionId: 'berlin', from: hourAgo.toISOString(), to: now.toISOString() }),
    },
    {
      name: 'models',
      query: `query Models {
  models { name version status serving schemaVersion trainingData horizonMinutes createdAt metrics { name value } }
}`,
    },
    {
      name: 'rollout',
      query: `# The canary rollout in progress (null when none). startRollout / promoteModel / rollbackModel need X-Admin-Key.
query Rollout {
  rollout {
    candidate stable state phase phases percent shadow phaseEndsAt reason waiting
    candidateStats { requests errorRate p99LatencyMs mape }
    stableStats { requests errorRate p99LatencyMs mape }
  }
}`,
    },
    {
      name: 'surgeUpdated',
      query: `# Live multipliers over the websocket (graphql-transport-ws): a snapshot first, then changes.
subscription SurgeUpdated {
  surgeUpdated(regionIds: ["berlin", "paris"], minChange: 0) {
    regionId productType surgeMultiplier previous demand supply at reason snapshot
  }
}`,
    },
    {
      name: 'experimentResults',
      query: `query ExperimentResults($id: ID!) {
  experimentResults(experimentId: $id) {
    verdict verdictReason winner daysElapsed
    sampleRatio { pValue mismatch }
    variants { name users convertedUsers conversions cancellations revenue }
    metrics { metric guardrail comparisons { variant relativeLift relativeInterval { lower upper } pValue sequentialPValue adjustedPValue chanceToBeatControl } }
  }
}`,
      variables: json({ id: 'ten-off' }),
    },
    {
      name: 'setPricingRule (admin)',
      query: `# Admin operations need the admin API key (data/admin-api-key) in the X-Admin-Key header:
# open "Headers" below and replace the placeholder.
mutation SetPricingRule($input: PricingRuleInput!) {
  setPricingRule(input: $input) { regionId productType version effectiveFrom basePrice maxMultiplier }
}`,
      variables: json({ input: { regionId: 'berlin', productType: 'ride', currency: 'EUR', basePrice: 9.5, maxMultiplier: 2.5 } }),
      headers: json({ 'X-Admin-Key': 'paste the admin key here' }),
    },
  ];
}
