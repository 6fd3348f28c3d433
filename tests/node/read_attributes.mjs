// Reads attributes from a Signals-compatible server with the official Node SDK and prints the
// results as JSON: {"batch": <getBatchServiceAttributes>, "group": <getGroupAttributes>}.
// Usage: node read_attributes.mjs '<json request>'
import { Signals } from "@snowplow/signals-node";

const request = JSON.parse(process.argv[2]);
const signals = new Signals({ baseUrl: request.baseUrl, sandboxToken: request.token });
const batch = await signals.getBatchServiceAttributes({
  name: request.service,
  attribute_key: request.attributeKey,
  identifiers: request.identifiers,
});
const group = await signals.getGroupAttributes({
  name: request.group,
  version: request.version,
  attributes: request.attributes,
  attribute_key: request.attributeKey,
  identifier: request.identifiers[0],
});
process.stdout.write(JSON.stringify({ batch, group }));
