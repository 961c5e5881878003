// Starts GraphiQL on the page served at GET /graphql, talking to this server's POST /graphql.
// A file of its own, not an inline script, so that the page's Content-Security-Policy can
// forbid inline scripts.
(function () {
  'use strict';
  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  var fetcher = GraphiQL.createFetcher({ url: '/graphql' });
  root.render(React.createElement(GraphiQL, { fetcher: fetcher, defaultEditorToolsVisibility: true }));
})();
