// A Validated Relationships Service double for local runs (scripts/run-with-idps.sh), following
// the VRS FHIR API's documented wire format (docs/proxy-access.md): GET
// /validated-relationships/FHIR/R4/Consent?performer:identifier=..&patient:identifier=..&status=..
// answers a searchset Bundle of proxy roles (FHIR Consent). X-Request-ID is required; errors are
// OperationOutcomes with the VRS codes. The Rust tests use tests/it/support/vrs_double.rs.
//
// Usage: node tests/idp/vrs-double.mjs --port P --role PROXY_NHS:PATIENT_NHS [--role ...]
// Prints `listening <base URL>` once ready.

import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

const NHS = 'https://fhir.nhs.uk/Id/nhs-number';
const { values: args } = parseArgs({ options: { port: { type: 'string' }, role: { type: 'string', multiple: true } } });
const roles = (args.role ?? []).map((pair, i) => {
  const [proxy, patient] = pair.split(':');
  return {
    resourceType: 'Consent', id: `role-${i + 1}`, status: 'active',
    scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
    category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'INFA' }] }],
    patient: { identifier: { system: NHS, value: patient } },
    performer: [{ identifier: { system: NHS, value: proxy } }],
    policyRule: { coding: [{ system: 'https://fhir.nhs.uk/England/CodeSystem/England-NHSProxyLegalBasis', code: 'health-and-welfare-lasting-power-of-attorney' }] },
    provision: { type: 'permit', period: { start: '2025-01-01' } },
  };
});

function send(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/fhir+json' });
  res.end(JSON.stringify(body));
}

function error(res, status, code, diagnostics) {
  send(res, status, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'invalid',
    details: { coding: [{ system: 'https://fhir.nhs.uk/R4/CodeSystem/ValidatedRelationships-ErrorOrWarningCode', version: '1', code }] }, diagnostics }] });
}

const nhsNumber = (value) => {
  const v = value?.startsWith(`${NHS}|`) ? value.slice(NHS.length + 1) : value;
  return /^\d{10}$/.test(v ?? '') ? v : null;
};

const server = createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  if (req.method !== 'GET' || url.pathname !== '/validated-relationships/FHIR/R4/Consent') {
    return error(res, 404, 'INVALIDATED_RESOURCE', 'no such resource');
  }
  if (!req.headers['x-request-id']) return error(res, 400, 'MISSING_HEADER', 'X-Request-ID is required');
  const performer = url.searchParams.get('performer:identifier');
  const patient = url.searchParams.get('patient:identifier');
  if (!performer && !patient) return error(res, 400, 'MISSING_IDENTIFIER_VALUE', 'give performer:identifier or patient:identifier');
  if ((performer && !nhsNumber(performer)) || (patient && !nhsNumber(patient))) {
    return error(res, 422, 'INVALID_IDENTIFIER_VALUE', 'Not a valid NHS Number');
  }
  const statuses = (url.searchParams.get('status') ?? '').split(',').filter(Boolean);
  const found = roles.filter((r) => (!performer || r.performer[0].identifier.value === nhsNumber(performer))
    && (!patient || r.patient.identifier.value === nhsNumber(patient))
    && (statuses.length === 0 || statuses.includes(r.status)));
  const bundle = { resourceType: 'Bundle', type: 'searchset', total: found.length };
  if (found.length) bundle.entry = found.map((r) => ({ fullUrl: `${url.origin}/Consent/${r.id}`, resource: r, search: { mode: 'match' } }));
  return send(res, 200, bundle);
});

server.listen(Number(args.port ?? 0), '127.0.0.1', () => {
  process.stdout.write(`listening http://127.0.0.1:${server.address().port}/validated-relationships/FHIR/R4\n`);
});
