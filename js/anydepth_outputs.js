// anydepth: bring a node's last output back to its preview after a workflow-tab switch or a page reload.
//
// ComfyUI sends a node's UI output once, in the "executed" message, and the pack's previews (depth preview, 3D
// viewer) draw it from onExecuted. Their nodes are output nodes, so a cached run sends it again, as for core's
// Preview Image. Two more cases bring it back here:
// - a workflow-tab switch: the frontend restores the tab's outputs into its output store and tells extensions
//   (onNodeOutputsUpdated, with NodeLocatorId keys): watchNodeOutputs shows them;
// - a page reload: the frontend keeps no outputs, but the server's /history holds each run's UI outputs with the
//   workflow that was queued: restoreOnConfigure looks up the newest run of this workflow (same workflow id, same
//   node id and type) and shows that. A restarted server has no history and no temp files: nothing is shown.
// Loaded by ComfyUI as an extension script too; it registers nothing itself.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const HISTORY_ITEMS = 64;

/** The node a frontend NodeLocatorId names: "12" in the root graph, "<subgraph uuid>:12" inside a subgraph. */
export function nodeForLocator(locator) {
  const root = app.rootGraph ?? app.graph;
  const parts = String(locator).split(":");
  if (parts.length === 1) return root?.getNodeById(parts[0]) ?? null;
  return root?.subgraphs?.get(parts[0])?.getNodeById(parts[1]) ?? null;
}

/** Show each restored output (the frontend's onNodeOutputsUpdated) on the nodes of `types` it belongs to. */
export function watchNodeOutputs(nodeOutputs, types, show) {
  for (const [locator, output] of Object.entries(nodeOutputs ?? {})) {
    const node = nodeForLocator(locator);
    if (node && types.has(node.type ?? node.comfyClass) && show(node, output)) node.anydepthShown = true;
  }
}

let historyRequest = null;

/** The server's recent history: one request for all the nodes of a graph being loaded. */
function recentHistory() {
  historyRequest ??= api.fetchApi(`/history?max_items=${HISTORY_ITEMS}`)
    .then((r) => (r.ok ? r.json() : {}))
    .catch(() => ({}))
    .finally(() => setTimeout(() => (historyRequest = null), 2000));
  return historyRequest;
}

/** The UI output holding `key` of the newest run of this node's workflow in the server's history, or null. */
export async function outputFromHistory(node, key) {
  const graph = node.graph;
  const root = app.rootGraph ?? app.graph;
  if (!graph || graph !== root || !graph.id) return null; // root-graph nodes of a saved-state graph only
  const history = await recentHistory();
  let found = null;
  for (const entry of Object.values(history ?? {})) { // oldest first: the last match is the newest run
    const [, , prompt, extra] = entry?.prompt ?? [];
    if (extra?.extra_pnginfo?.workflow?.id !== graph.id) continue;
    if (prompt?.[String(node.id)]?.class_type !== node.type) continue;
    const output = entry.outputs?.[String(node.id)];
    if (output?.[key]) found = output;
  }
  return node.graph === graph ? found : null; // still the same graph after the wait
}

/** Chain onConfigure of `nodeType` (a node restored from a saved graph) to show its last output from the history,
 * unless the node has shown something newer meanwhile. `show(node, output)` returns whether it showed something. */
export function restoreOnConfigure(nodeType, key, show) {
  const onConfigure = nodeType.prototype.onConfigure;
  nodeType.prototype.onConfigure = function () {
    const result = onConfigure?.apply(this, arguments);
    const node = this;
    node.anydepthShown = false;
    setTimeout(async () => { // after the whole graph is configured (its id, the other nodes)
      const output = await outputFromHistory(node, key);
      if (output && !node.anydepthShown && show(node, output)) node.anydepthShown = true;
    }, 0);
    return result;
  };
}
