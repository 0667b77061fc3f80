// Validates the chart's PodMonitor and PrometheusRule against the prometheus-operator CRD
// schemas (@kubernetes-models/prometheus-operator). Input: a JSON file {"good": [...], "bad":
// [...]}; every good object must validate, every bad one must be refused.
import { readFileSync } from "node:fs";
import { PodMonitor, PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const kinds = { PodMonitor, PrometheusRule };
const { good, bad } = JSON.parse(readFileSync(process.argv[2], "utf8"));
let failed = false;
for (const obj of good) {
  try {
    new kinds[obj.kind](obj).validate();
    console.log(`ok ${obj.kind} ${obj.metadata.name}`);
  } catch (e) {
    console.log(`INVALID ${obj.kind} ${obj.metadata.name}: ${e.message}`);
    failed = true;
  }
}
for (const obj of bad) {
  try {
    new kinds[obj.kind](obj).validate();
    console.log(`bad ${obj.kind} accepted: the validator checks nothing`);
    failed = true;
  } catch (e) {
    console.log(`bad ${obj.kind} refused: ${e.message.split("\n")[0]}`);
  }
}
process.exit(failed ? 1 : 0);
