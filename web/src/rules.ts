// Pricing rules of the selected region, and the admin form that adds a version.
import { errorText, fmt, gql, h } from './api';
import type { Region } from './grid';

const RULES = `query Rules($id: ID!) { pricingRules(regionId: $id) { productType currency version effectiveFrom basePrice minMultiplier maxMultiplier maxStepPerMinute threshold sensitivity multiplierStep priceStep } }`;
const SET = `mutation SetRule($input: PricingRuleInput!) { setPricingRule(input: $input) { productType version effectiveFrom basePrice maxMultiplier } }`;
const KEY = 'surge.adminKey';

interface Rule { productType: string; currency: string; version: number; effectiveFrom: string; basePrice: number; minMultiplier: number; maxMultiplier: number; maxStepPerMinute: number; threshold: number; sensitivity: number; multiplierStep: number; priceStep: number }
const FIELDS = ['basePrice', 'minMultiplier', 'maxMultiplier', 'maxStepPerMinute', 'threshold', 'sensitivity'] as const;
const LABELS: Record<(typeof FIELDS)[number], string> = {
  basePrice: 'Base price',
  minMultiplier: 'Min multiplier',
  maxMultiplier: 'Max multiplier',
  maxStepPerMinute: 'Max step per minute',
  threshold: 'Threshold',
  sensitivity: 'Sensitivity',
};

export function mountRules(root: HTMLElement): { show: (region: Region) => void } {
  const tableBox = h('div', { id: 'rules-table' });
  const product = h('select', { id: 'rule-product', name: 'productType' });
  const inputs = Object.fromEntries(FIELDS.map((f) => [f, h('input', { id: `rule-${f}`, name: f, type: 'number', step: 'any', min: 0, required: true })])) as Record<(typeof FIELDS)[number], HTMLInputElement>;
  const key = h('input', { id: 'admin-key', name: 'adminKey', type: 'password', autocomplete: 'off' });
  key.value = sessionStorage.getItem(KEY) ?? '';
  key.addEventListener('input', () => (key.value ? sessionStorage.setItem(KEY, key.value) : sessionStorage.removeItem(KEY)));
  const alert = h('p', { id: 'rules-alert', role: 'alert', class: 'alert' });
  const status = h('p', { id: 'rules-status', role: 'status', class: 'ok' });
  const submit = h('button', { type: 'submit', id: 'rule-save' }, 'Save new version');
  const field = (id: string, label: string, input: HTMLElement) => h('div', { class: 'field' }, h('label', { for: id }, label), input);
  const form = h(
    'form',
    { id: 'rule-form', class: 'form', 'aria-label': 'Add a pricing rule version' },
    field('rule-product', 'Product', product),
    ...FIELDS.map((f) => field(`rule-${f}`, LABELS[f], inputs[f])),
    field('admin-key', 'Admin key', key),
    h('div', { class: 'field' }, submit),
  );
  root.replaceChildren(tableBox, h('h3', {}, 'Change a rule (admin)'), form, alert, status);

  let region: Region | undefined;
  let rules: Rule[] = [];
  const fill = () => {
    const r = rules.find((x) => x.productType === product.value);
    if (r) for (const f of FIELDS) inputs[f].value = String(r[f]);
  };
  product.addEventListener('change', fill);

  async function load(keepForm = false): Promise<void> {
    if (!region) return;
    try {
      const d = await gql<{ pricingRules: Rule[] }>(RULES, { id: region.id });
      rules = d.pricingRules;
      const heads = ['Product', 'Version', 'Effective from', 'Base', 'Min ×', 'Max ×', 'Step/min', 'Threshold', 'Sensitivity'];
      tableBox.replaceChildren(
        h(
          'table',
          { class: 'data', id: 'rules' },
          h('caption', {}, `Rules in force in ${region.name}`),
          h('thead', {}, h('tr', {}, ...heads.map((t) => h('th', { scope: 'col' }, t)))),
          h(
            'tbody',
            {},
            ...rules.map((r) =>
              h(
                'tr',
                { 'data-product': r.productType, 'data-version': r.version },
                ...[r.productType, String(r.version), new Date(r.effectiveFrom).toLocaleString('en-GB'), `${fmt(r.basePrice)} ${r.currency}`, fmt(r.minMultiplier), fmt(r.maxMultiplier), fmt(r.maxStepPerMinute), fmt(r.threshold), fmt(r.sensitivity)].map((c) => h('td', {}, c)),
              ),
            ),
          ),
        ),
      );
      if (!keepForm) {
        product.replaceChildren(...rules.map((r) => h('option', { value: r.productType }, r.productType)));
        fill();
      }
    } catch (err) {
      tableBox.textContent = `Pricing rules: ${errorText(err)}`;
    }
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!region) return;
    alert.textContent = '';
    status.textContent = '';
    const rule = rules.find((x) => x.productType === product.value);
    const input: Record<string, unknown> = { regionId: region.id, productType: product.value, currency: rule?.currency ?? region.currency };
    for (const f of FIELDS) input[f] = Number(inputs[f].value);
    if (rule) {
      input.multiplierStep = rule.multiplierStep;
      input.priceStep = rule.priceStep;
    }
    submit.disabled = true;
    try {
      const headers: Record<string, string> = key.value ? { 'X-Admin-Key': key.value } : {};
      const d = await gql<{ setPricingRule: Rule }>(SET, { input }, headers);
      const r = d.setPricingRule;
      status.textContent = `Saved ${r.productType} version ${r.version}, effective from ${new Date(r.effectiveFrom).toLocaleString('en-GB')}.`;
      status.dataset.version = String(r.version);
      await load(true);
    } catch (err) {
      alert.textContent = errorText(err);
    } finally {
      submit.disabled = false;
    }
  });

  return {
    show(r) {
      region = r;
      alert.textContent = '';
      status.textContent = '';
      void load();
    },
  };
}
