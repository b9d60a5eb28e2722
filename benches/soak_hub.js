// Soak hub clients: N connections through the official SignalR client, each in its tenant's
// group, counting what they receive. Tokens come as arguments (one per subject; the demo caps a
// subject at 100 connections), connections are spread over them round-robin.
//
//   node soak_hub.js <hub url> <connections> <tenant>=<token> [<tenant>=<token> …]
//
// Prints one JSON line every 10 s ({connected, received, closed, errors}) and a last one on
// SIGTERM.
"use strict";
const path = require("node:path");
const signalR = require(path.join(__dirname, "../tests/signalr/node_modules/@microsoft/signalr"));

const [url, count, ...grants] = process.argv.slice(2);
const callers = grants.map((g) => {
  const [tenant, token] = g.split("=");
  return { tenant, token };
});
const stats = { connected: 0, received: 0, closed: 0, errors: 0 };
const report = () => process.stdout.write(JSON.stringify({ t: Date.now(), ...stats }) + "\n");

async function open(i) {
  const { tenant, token } = callers[i % callers.length];
  const connection = new signalR.HubConnectionBuilder()
    .withUrl(url, {
      accessTokenFactory: () => token,
      skipNegotiation: true,
      transport: signalR.HttpTransportType.WebSockets,
    })
    .configureLogging(signalR.LogLevel.None)
    .build();
  for (const type of ["fx.quote.created", "payment.processed"]) {
    connection.on(type, () => {
      stats.received += 1;
    });
  }
  connection.onclose(() => {
    stats.closed += 1;
  });
  try {
    await connection.start();
    await connection.invoke("JoinTenantGroup", tenant, null);
    stats.connected += 1;
  } catch (error) {
    stats.errors += 1;
  }
}

(async () => {
  // In batches, so the start is a ramp and not a thundering herd.
  for (let i = 0; i < Number(count); i += 50) {
    await Promise.all(Array.from({ length: Math.min(50, Number(count) - i) }, (_, k) => open(i + k)));
  }
  report();
  setInterval(report, 10_000);
})();
process.on("SIGTERM", () => {
  report();
  process.exit(0);
});
