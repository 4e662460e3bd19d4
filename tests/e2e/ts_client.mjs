#!/usr/bin/env node
// A real TypeScript-SDK client for the end-to-end tests: connect over streamable HTTP, list the
// tools, call one, print a JSON summary on stdout.
//
//   node ts_client.mjs URL TOOL [ARGS_JSON] [--task]
//
// Prints {"protocolVersion", "serverInfo", "serverCapabilities", "tools": [names],
//         "call": {"name", "arguments", "result", "taskStatuses"}}.
// --task calls the tool task-augmented (the SDK's experimental callToolStream: tools/call with a
// `task` parameter, then tasks/get and tasks/result), as a task-capable client does for a tool
// whose execution.taskSupport is "required"; taskStatuses lists the statuses it saw.
// Exit 0 on success, 1 when connecting, listing or calling fails (the error on stderr),
// 2 when the tool answered with an isError result (the summary is still printed).
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const TIMEOUT_MS = 30_000;

async function callAsTask(client, name, args) {
  const statuses = [];
  const stream = client.experimental.tasks.callToolStream({ name, arguments: args }, undefined, {
    task: { ttl: 60_000 },
    timeout: TIMEOUT_MS,
  });
  for await (const message of stream) {
    if (message.type === "taskCreated" || message.type === "taskStatus") {
      statuses.push(message.task.status);
    } else if (message.type === "result") {
      return { result: message.result, statuses };
    } else if (message.type === "error") {
      const error = message.error;
      throw new Error(`task-augmented call failed: ${error?.message ?? JSON.stringify(error)} (statuses: ${statuses})`);
    }
  }
  throw new Error(`task-augmented call ended without a result (statuses: ${statuses})`);
}

async function main(argv) {
  const asTask = argv.includes("--task");
  const [url, tool, argsJson = "{}"] = argv.filter((arg) => arg !== "--task");
  if (!url || !tool) {
    throw new Error("usage: ts_client.mjs URL TOOL [ARGS_JSON] [--task]");
  }
  const args = JSON.parse(argsJson);
  const client = new Client({ name: "vmcp-e2e-ts-client", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(url));
  await client.connect(transport, { timeout: TIMEOUT_MS });
  try {
    const tools = [];
    let cursor;
    do {
      const page = await client.listTools(cursor ? { cursor } : {}, { timeout: TIMEOUT_MS });
      tools.push(...page.tools.map((t) => t.name));
      cursor = page.nextCursor;
    } while (cursor);
    let result;
    let taskStatuses = null;
    if (asTask) {
      ({ result, statuses: taskStatuses } = await callAsTask(client, tool, args));
    } else {
      result = await client.callTool({ name: tool, arguments: args }, undefined, { timeout: TIMEOUT_MS });
    }
    const summary = {
      protocolVersion: transport.protocolVersion ?? null,
      serverInfo: client.getServerVersion() ?? null,
      serverCapabilities: client.getServerCapabilities() ?? null,
      tools,
      call: { name: tool, arguments: args, result, taskStatuses },
    };
    process.stdout.write(JSON.stringify(summary) + "\n");
    return result.isError ? 2 : 0;
  } finally {
    await client.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`ts_client: ${err?.stack ?? err}\n`);
    process.exitCode = 1;
  },
);
