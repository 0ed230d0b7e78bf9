// The dashboard: wires the views to the region selection and the live status.
import { apiKey, connect, errorText, gql, onLinkState, setAPIKey, type LinkState } from './api';
import { mountExperiments } from './experiments';
import { mountGrid, type Region } from './grid';
import { mountModels } from './models';
import { mountRegion } from './region';
import { mountRules } from './rules';
import './style.css';

const $ = (id: string) => document.getElementById(id)!;

const status = $('live-status');
const STATUS: Record<LinkState, string> = {
  connecting: 'Connecting…',
  connected: 'Live: connected',
  reconnecting: 'Reconnecting…',
  polling: 'Live updates unavailable: polling',
};
onLinkState((state, detail) => {
  // Once a view polls, the websocket state no longer describes what the page shows.
  if (status.dataset.state === 'polling' && state !== 'polling') return;
  status.dataset.state = state;
  status.textContent = STATUS[state];
  status.title = detail ?? '';
});
connect();

// A server without open roles needs a key (client and analyst roles for the dashboard).
const keyInput = $('api-key') as HTMLInputElement;
keyInput.value = apiKey();
keyInput.addEventListener('change', () => {
  setAPIKey(keyInput.value.trim());
  location.reload();
});

async function start(): Promise<void> {
  let regions: Region[];
  try {
    regions = (await gql<{ regions: Region[] }>(`query Regions { regions { id name currency products } }`)).regions;
  } catch (err) {
    $('grid').textContent = `Could not load the regions: ${errorText(err)}`;
    return;
  }
  const select = $('region-select') as HTMLSelectElement;
  select.replaceChildren(...regions.map((r) => new Option(r.name, r.id)));
  const region = mountRegion($('region'));
  const rules = mountRules($('rules'));
  const choose = (id: string) => {
    const r = regions.find((x) => x.id === id);
    if (!r) return;
    select.value = id;
    region.show(r.id, r.name);
    rules.show(r);
    document.querySelectorAll('.region-name').forEach((el) => (el.textContent = r.name));
  };
  select.addEventListener('change', () => choose(select.value));
  mountGrid($('grid'), regions, choose);
  if (regions.length) choose(regions[0].id);
  mountModels($('models'));
  mountExperiments($('experiments'));
}
void start();
