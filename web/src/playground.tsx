// The GraphQL playground: GraphiQL 3 bundled with its CSS, queries over HTTP and
// subscriptions over graphql-ws on the same origin.
import { createGraphiQLFetcher, type Fetcher } from '@graphiql/toolkit';
import { GraphiQL } from 'graphiql';
import 'graphiql/graphiql.css';
import { Kind, parse } from 'graphql';
import { createRoot } from 'react-dom/client';
import { examples } from './examples';

const ws = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/graphql`;
const base = createGraphiQLFetcher({ url: '/graphql', subscriptionUrl: ws });

// GraphiQL 3 keeps the operation name of the tab it showed first after a switch
// to another tab (the server then answers "operation Price not found"): send the
// name only when the document has an operation of that name.
const fetcher: Fetcher = (params, opts) => {
  if (params.operationName) {
    try {
      const names = parse(params.query)
        .definitions.flatMap((d) => (d.kind === Kind.OPERATION_DEFINITION && d.name ? [d.name.value] : []));
      if (!names.includes(params.operationName)) params = { ...params, operationName: names.length === 1 ? names[0] : undefined };
    } catch {
      // Not parseable: the server says why.
    }
  }
  return base(params, opts);
};

const tabs = examples().map((e) => ({ query: e.query, variables: e.variables, headers: e.headers }));

createRoot(document.getElementById('graphiql')!).render(
  // variables: GraphiQL 3 fills the first tab's variable editor from this prop, not from the tab.
  <GraphiQL fetcher={fetcher} defaultTabs={tabs} variables={tabs[0].variables} defaultEditorToolsVisibility={true} shouldPersistHeaders={false} />,
);
