// A hub client built on the official @microsoft/signalr package, driven by payedge's tests.
//
//   node client.js <hub url> <token> [--skip-negotiation] [--reconnect] [--resume <tenant>]
//                  [--stateful]
//
// It prints one JSON line per thing that happens (connected, message, invoked, reconnecting,
// reconnected, resumed, closed) and takes commands on stdin, one per line:
//   join <tenant> [lastStreamId] | leave <tenant> | invoke <method> [argument] | stop
//
// --resume <tenant>: as an application would, remember the streamid of the last event of
// <tenant> and, after every automatic reconnect, join again from it (printing `resumed`).
// --stateful: the client's withStatefulReconnect().
"use strict";
const signalR = require("@microsoft/signalr");
const readline = require("node:readline");

const [url, token, ...flags] = process.argv.slice(2);
const say = (event, fields = {}) => process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");

const options = { accessTokenFactory: () => token };
if (flags.includes("--skip-negotiation")) {
  options.skipNegotiation = true;
  options.transport = signalR.HttpTransportType.WebSockets;
}
let builder = new signalR.HubConnectionBuilder()
  .withUrl(url, options)
  .configureLogging(signalR.LogLevel.None);
if (flags.includes("--reconnect") || flags.includes("--resume")) {
  builder = builder.withAutomaticReconnect([0, 200, 500, 1000, 1000, 1000, 2000, 2000, 2000]);
}
if (flags.includes("--stateful")) {
  builder = builder.withStatefulReconnect();
}
const connection = builder.build();
const resumeTenant = flags.includes("--resume") ? flags[flags.indexOf("--resume") + 1] : null;
let lastStreamId = null;

for (const type of ["fx.quote.created", "payment.processed", "rate.updated", "user.activity", "system.alert"]) {
  connection.on(type, (envelope) => {
    if (envelope && envelope.tenant === resumeTenant && envelope.streamid) lastStreamId = envelope.streamid;
    say("message", { target: type, envelope });
  });
}
connection.onreconnecting((error) => say("reconnecting", { error: error ? String(error) : null }));
connection.onreconnected(async (connectionId) => {
  say("reconnected", { connectionId });
  if (resumeTenant) {
    try {
      const result = await connection.invoke("JoinTenantGroup", resumeTenant, lastStreamId);
      say("resumed", { from: lastStreamId, result });
    } catch (error) {
      say("resumed", { from: lastStreamId, error: String(error.message || error) });
    }
  }
});
connection.onclose((error) => {
  say("closed", { error: error ? String(error.message || error) : null });
  process.exit(0);
});

async function invoke(method, argument, ...more) {
  const args = [argument, ...more].filter((a) => a !== undefined);
  try {
    const result = await connection.invoke(method, ...args);
    say("invoked", { method, argument, ok: true, result: result === undefined ? null : result });
  } catch (error) {
    say("invoked", { method, argument, ok: false, error: String(error.message || error) });
  }
}

readline.createInterface({ input: process.stdin }).on("line", async (line) => {
  const [command, first, second] = line.trim().split(/\s+/);
  if (command === "join") await invoke("JoinTenantGroup", first, second);
  else if (command === "leave") await invoke("LeaveTenantGroup", first);
  else if (command === "invoke") await invoke(first, second);
  else if (command === "stop") await connection.stop();
});

connection
  .start()
  .then(() => say("connected", { connectionId: connection.connectionId }))
  .catch((error) => {
    say("failed", { error: String(error.message || error), statusCode: error.statusCode ?? null });
    process.exit(1);
  });
