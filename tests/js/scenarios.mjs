// Scenarios for Replicate's JavaScript client against the sandbox, one per run:
//   SANDBOX_URL=http://127.0.0.1:8000/sandbox SANDBOX_TOKEN=r8_... node scenarios.mjs <name>
// Prints what the scenario saw as one JSON line; tests/test_js_client.py checks it.
import Replicate from "replicate";
import streams from "replicate/lib/stream.js";

const replicate = new Replicate({
  auth: process.env.SANDBOX_TOKEN,
  baseUrl: `${process.env.SANDBOX_URL}/v1`,
});
const versions = JSON.parse(process.env.SANDBOX_VERSIONS || "{}");

async function settle(prediction) {
  while (!["succeeded", "failed", "canceled", "aborted"].includes(prediction.status)) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    prediction = await replicate.predictions.get(prediction.id);
  }
  return prediction;
}

const scenarios = {
  async "run-official-by-name"() {
    const output = await replicate.run("sandbox/text", {
      input: { prompt: "hello from js", max_tokens: 8, seed: 7, token_delay_ms: 0 },
    });
    return { output };
  },

  async "run-community-by-version"() {
    const ref = `sandbox-community/echo:${versions["sandbox-community/echo"].v1}`;
    return { output: await replicate.run(ref, { input: { text: "hi" } }) };
  },

  async "run-community-by-name-is-404"() {
    try {
      await replicate.run("sandbox-community/echo", { input: { text: "hi" } });
      return { status: null };
    } catch (error) {
      return { status: error.response?.status ?? null, message: String(error.message) };
    }
  },

  async "run-image"() {
    const output = await replicate.run("sandbox/image", {
      input: { prompt: "js", width: 64, height: 64, output_format: "png" },
    });
    const response = await fetch(String(output[0]));
    const bytes = new Uint8Array(await response.arrayBuffer());
    return { urls: output.map(String), contentType: response.headers.get("content-type"), size: bytes.length };
  },

  async stream() {
    const events = [];
    let text = "";
    for await (const event of replicate.stream("sandbox/text", {
      input: { prompt: "streamed from js", max_tokens: 12, seed: 3, token_delay_ms: 5 },
    })) {
      events.push(event.event);
      if (event.event === "output") text += event.data;
    }
    return { text, events: [...new Set(events)] };
  },

  // A stream URL read as the client reads `urls.stream` (no token): STREAM_URL.
  async "stream-url"() {
    const events = [];
    let text = "";
    const stream = streams.createReadableStream({ url: process.env.STREAM_URL, fetch });
    for await (const event of stream) {
      events.push([event.event, event.id]);
      if (event.event === "output") text += event.data;
    }
    return { text, events };
  },

  async "files-create-with-metadata"() {
    const file = new Blob(["hello file"], { type: "text/plain" });
    const created = await replicate.files.create(file, { purpose: "js test", n: 1 });
    const fetched = await replicate.files.get(created.id);
    const listed = await replicate.files.list();
    await replicate.files.delete(created.id);
    return {
      metadata: created.metadata,
      fetchedMetadata: fetched.metadata,
      size: created.size,
      listed: listed.results.some((f) => f.id === created.id),
    };
  },

  async "predictions-create-get-cancel-list"() {
    const created = await replicate.predictions.create({
      version: versions["sandbox/slow"].latest,
      input: { seconds: 30 },
    });
    const fetched = await replicate.predictions.get(created.id);
    const canceled = await replicate.predictions.cancel(created.id);
    const page = await replicate.predictions.list();
    return {
      createdStatus: created.status,
      fetchedId: fetched.id,
      canceledStatus: canceled.status,
      listed: page.results.some((p) => p.id === created.id),
    };
  },

  async "predictions-create-by-model"() {
    const created = await replicate.predictions.create({
      model: "sandbox/slow",
      input: { seconds: 1 },
    });
    const done = await settle(created);
    return { status: done.status, output: done.output, version: done.version };
  },

  async "models-get-and-versions"() {
    const model = await replicate.models.get("sandbox-community", "echo");
    const listed = await replicate.models.versions.list("sandbox-community", "echo");
    const version = await replicate.models.versions.get(
      "sandbox-community",
      "echo",
      listed.results[1].id
    );
    const all = [];
    for await (const page of replicate.paginate(replicate.models.list)) {
      all.push(...page.map((m) => `${m.owner}/${m.name}`));
    }
    return {
      isOfficial: model.is_official,
      latest: model.latest_version.id,
      versions: listed.results.map((v) => v.id),
      versionId: version.id,
      allModels: all.sort(),
      defaultExample: model.default_example?.output ?? null,
    };
  },

  async "wait-and-deployment"() {
    const prediction = await replicate.deployments.predictions.create("sandbox", "slow", {
      input: { seconds: 1 },
    });
    const done = await replicate.wait(prediction, { interval: 50 });
    return { status: done.status, deployment: done.deployment ?? null };
  },
};

const name = process.argv[2];
if (!scenarios[name]) {
  console.error(`unknown scenario ${name}; known: ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}
console.log(JSON.stringify(await scenarios[name]()));
