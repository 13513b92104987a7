// Runner for the comparison tool: @azure/container-registry's ContainerRegistryContentClient.
//
//   node tools/compare/js/runner.mjs < request.json > observation.json
//
// Reads one request (JSON) on stdin and writes one observation (JSON) on stdout; exits 0 even
// when a download failed, non-zero only when the runner itself broke. See tools/compare/run.py.
//
// What the client can express (read in node_modules/@azure/container-registry/dist/esm and
// @azure/core-rest-pipeline/dist/esm):
// - Plain http: no. The content client always adds core-rest-pipeline's
//   bearerTokenAuthenticationPolicy, which throws for any non-https URL before sending anything,
//   even without a credential and with `allowInsecureConnection: true` (core-rest-pipeline
//   1.23.0 to 1.25.1 alike). The runner reports that as unsupported, from the first attempt.
// - Anonymous access: no credential. A 401 challenge must be `Bearer` with `service` and
//   `scope`; the client then POSTs to the *registry's* /oauth2/token (ACR's endpoint) and never
//   to the challenge's realm.
// - Authenticated access: only an AAD TokenCredential, exchanged at the registry's
//   /oauth2/exchange for an ACR refresh token. With the request's `aad_token` (the ACR
//   deployment, where the orchestrator runs this client) the runner passes a fake credential
//   of @azure/core-auth's TokenCredential shape, `getToken(scopes)` resolving to `{token,
//   expiresOnTimestamp}`, as azure-identity's credentials do. No username/password, neither
//   Basic nor the Docker token protocol: requests with credentials and no AAD token are
//   reported as unsupported.
// - Parallel ranges: none (downloadBlob streams one GET); a request with `max_concurrency` above
//   1 is reported as unsupported.
// - A private CA: Node reads NODE_EXTRA_CA_CERTS only at start, so the runner starts itself again
//   with it set to the request's `ca_cert`.
// - Pulls: the client has none, and no platform choice. For an image pull the runner composes
//   one: getManifest(tag) (the index; its bytes are checked against Docker-Content-Digest), the
//   runner's pick of the index's entry for the platform, getManifest(digest), then downloadBlob
//   of the config and each layer into pull-<i>/<hex>, and last the manifest's bytes as the
//   client hands them over (`content`) in manifest.json, the `dir:` shape tools/compare/
//   scenarios.py reads. Nothing writes layers as files named by their titles: such a request
//   is reported as unsupported.
// - The digest check runs in an 'end' handler: a mismatch is thrown from an event handler and
//   escapes as an uncaught exception; the stream then never ends. The runner catches it
//   (process 'uncaughtException') and reports it as that download's error, marked as such.

import { spawn } from "node:child_process";
import { once } from "node:events";
import { createWriteStream, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";

const CHILD_MARK = "ACR_BLOB_COMPARE_RUNNER_CHILD";
const PROXY_VARIABLES = ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"];
const ERROR_LIMIT = 300;
// core-rest-pipeline's bearerTokenAuthenticationPolicy, which the content client always adds.
const PLAIN_HTTP_REFUSED = /Bearer token authentication is not permitted for non-TLS/;
const AAD_TOKEN_LIFETIME_MS = 3600 * 1000;
// The AAD audience of ACR's data plane (the client asks the credential for AUDIENCE/.default).
const AUDIENCE = "https://containerregistry.azure.net";

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) {
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function clientName() {
  const manifest = new URL("./node_modules/@azure/container-registry/package.json", import.meta.url);
  const { name, version } = JSON.parse(readFileSync(manifest, "utf8"));
  return `${name} ${version}`;
}

function describe(error, uncaught) {
  const type = error?.name || error?.constructor?.name || typeof error;
  let message = error instanceof Error ? error.message : String(error);
  const status = error?.statusCode;
  if (typeof status === "number" && !message.includes(String(status))) {
    message = `${message} (HTTP ${status})`;
  }
  const marker = uncaught ? "[uncaught exception] " : "";
  return `${type}: ${marker}${message}`.replace(/\s+/g, " ").slice(0, ERROR_LIMIT);
}

// Refuses a registry that is not on this machine: the client must never leave it.
function checkLoopback(registry) {
  const url = new URL(registry);
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new Error(`registry must be an http(s) URL, got ${registry}`);
  }
  const host = url.hostname;
  const loopback =
    host === "localhost" || host === "[::1]" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
  if (!loopback) {
    throw new Error(`registry host ${host} is not a loopback address`);
  }
}

// Re-runs this script with NODE_EXTRA_CA_CERTS set, feeding it the same request.
async function respawnWithCa(raw, caCert) {
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    env: { ...process.env, NODE_EXTRA_CA_CERTS: caCert, [CHILD_MARK]: "1" },
    stdio: ["pipe", "inherit", "inherit"],
  });
  child.stdin.end(raw);
  const [code, signal] = await once(child, "exit");
  process.exitCode = signal ? 1 : code;
}

// The failure of the download in progress, for errors the client throws outside any promise.
let failCurrent = null;

function routeEscapedErrors() {
  const route = (error) => {
    if (failCurrent === null) {
      throw error;
    }
    failCurrent(error, true);
  };
  process.on("uncaughtException", route);
  process.on("unhandledRejection", route);
}

// Runs `work(abortSignal)` as one download: its outcome, within the request's timeout.
async function attempt(request, work) {
  const timeoutMs = Number(request.timeout ?? 60) * 1000;
  const abort = new AbortController();
  let timer;
  const started = performance.now();
  const running = new Promise((resolve, reject) => {
    const fail = (error, uncaught) => {
      reject({ error, uncaught });
      abort.abort(error);
    };
    failCurrent = fail;
    timer = setTimeout(() => {
      const error = new Error(
        `the download had not ended after ${timeoutMs / 1000} s (the request's timeout, ` +
          "which the runner applies to each download)",
      );
      error.name = "Timeout";
      fail(error, false);
    }, timeoutMs);
    work(abort.signal).then(resolve, (error) => fail(error, false));
  });
  let outcome;
  try {
    await running;
    outcome = { ok: true, error: null };
  } catch ({ error, uncaught }) {
    outcome = { ok: false, error: describe(error, uncaught) };
  } finally {
    clearTimeout(timer);
    failCurrent = null;
  }
  const elapsed = Math.round(performance.now() - started) / 1000;
  return { ...outcome, elapsed };
}

async function saveBlob(client, digest, target, signal) {
  const { content } = await client.downloadBlob(digest, { abortSignal: signal });
  await pipeline(content, createWriteStream(target), { signal });
}

// An image pull composed of the client's calls (see the header).
async function pullImage(client, request, folder, signal) {
  const [os, architecture] = request.platform.split("/");
  let result = await client.getManifest(request.tag, { abortSignal: signal });
  if (Array.isArray(result.manifest.manifests)) {
    const entry = result.manifest.manifests.find(
      (candidate) =>
        candidate.platform?.os === os && candidate.platform?.architecture === architecture,
    );
    if (!entry) {
      throw new Error(`the index has no ${os}/${architecture} manifest`);
    }
    result = await client.getManifest(entry.digest, { abortSignal: signal });
  }
  mkdirSync(folder, { recursive: true });
  for (const blob of [result.manifest.config, ...result.manifest.layers]) {
    await saveBlob(client, blob.digest, join(folder, blob.digest.split(":")[1]), signal);
  }
  writeFileSync(join(folder, "manifest.json"), result.content);
}

function downloadOnce(client, request, index) {
  if (request.pull) {
    const folder = join(request.output_dir, `pull-${index}`);
    return attempt(request, (signal) => pullImage(client, request, folder, signal));
  }
  const target = join(request.output_dir, `blob-${index}`);
  return attempt(request, (signal) => saveBlob(client, request.digest, target, signal));
}

// A TokenCredential (@azure/core-auth) handing out one AAD token, as azure-identity's would.
function fakeAadCredential(token) {
  return {
    async getToken(_scopes) {
      return { token, expiresOnTimestamp: Date.now() + AAD_TOKEN_LIFETIME_MS };
    },
  };
}

async function observe(request) {
  const name = clientName();
  if (request.credentials && !request.aad_token) {
    return {
      client: name,
      unsupported:
        "takes only an AAD TokenCredential (exchanged at the registry's /oauth2/exchange) " +
        "or none: no username/password, neither Basic nor the Docker token protocol",
      downloads: [],
    };
  }
  if (request.pull === "files") {
    return {
      client: name,
      unsupported:
        "no pull: getManifest and downloadBlob only, nothing that writes layers as files " +
        "named by their titles",
      downloads: [],
    };
  }
  if (Number(request.max_concurrency ?? 1) > 1) {
    return {
      client: name,
      unsupported:
        "no parallel ranges in one blob: downloadBlob streams one GET, no option for more",
      downloads: [],
    };
  }
  // Dynamic import: the pipeline's proxy settings must not see the variables removed in main().
  const { ContainerRegistryContentClient } = await import("@azure/container-registry");
  const credential = request.aad_token ? fakeAadCredential(request.aad_token) : undefined;
  const client = new ContainerRegistryContentClient(request.registry, request.repository, credential, {
    allowInsecureConnection: true,
    audience: AUDIENCE,
  });
  mkdirSync(request.output_dir, { recursive: true });
  routeEscapedErrors();
  const downloads = [];
  for (let index = 0; index < Number(request.downloads ?? 1); index++) {
    downloads.push(await downloadOnce(client, request, index));
    if (index === 0 && PLAIN_HTTP_REFUSED.test(downloads[0].error ?? "")) {
      // Thrown before any request is sent: the client cannot reach a plain-http registry.
      return {
        client: name,
        unsupported:
          "refuses plain-http registries whatever allowInsecureConnection says: its " +
          `bearer-token policy throws "${downloads[0].error.replace(/^Error: /, "")}"`,
        downloads: [],
      };
    }
  }
  return { client: name, unsupported: null, downloads };
}

async function main() {
  const raw = await readStdin();
  const request = JSON.parse(raw.toString("utf8"));
  try {
    checkLoopback(request.registry);
  } catch (error) {
    process.stderr.write(`runner: ${error.message}\n`);
    process.exitCode = 2;
    return;
  }
  if (request.ca_cert && !process.env[CHILD_MARK]) {
    await respawnWithCa(raw, request.ca_cert);
    return;
  }
  // Loopback only: no proxy from the environment may carry the client elsewhere.
  for (const variable of PROXY_VARIABLES) {
    delete process.env[variable];
    delete process.env[variable.toLowerCase()];
  }
  const observation = await observe(request);
  // Sockets kept alive or a stream the client never ended must not hold the process open.
  process.stdout.write(`${JSON.stringify(observation)}\n`, () => process.exit(0));
}

await main();
