// The page under test: the official browser build of @microsoft/signalr (served beside this
// file) using payedge's hub from another origin. Its query names the hub and the token. It
// reports what happens as JSON console lines, and offers the test three functions.
"use strict";
const params = new URLSearchParams(location.search);
const report = (event, fields = {}) => console.log(JSON.stringify({ event, ...fields }));
let connection = null;
let last = null;

// Connects, joins `tenant`'s group (from `lastStreamId` when given) and returns the outcome.
window.connectHub = async (tenant, lastStreamId) => {
  connection = new signalR.HubConnectionBuilder()
    .withUrl(params.get("hub"), { accessTokenFactory: () => params.get("token") })
    .configureLogging(signalR.LogLevel.None)
    .build();
  for (const type of ["fx.quote.created", "system.alert"]) {
    connection.on(type, (envelope) => {
      if (envelope.streamid) last = envelope.streamid;
      report("message", { envelope });
    });
  }
  try {
    await connection.start();
  } catch (error) {
    return { ok: false, error: String(error.message || error) };
  }
  const result = await connection.invoke("JoinTenantGroup", tenant, lastStreamId ?? null);
  return { ok: true, result: result ?? null };
};

// Closes the connection; returns the streamid of the last event received.
window.disconnectHub = async () => {
  await connection.stop();
  return last;
};
