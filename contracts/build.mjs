#!/usr/bin/env node
// Compile contracts/src/*.sol with the pinned solc-js and write contracts/artifacts/<Name>.json.
//
// The artifacts are committed and a test rebuilds them into a temporary directory and compares
// bytes, so everything here is deterministic: sources are keyed by repo-relative paths (never
// absolute ones), the metadata hash is left out of the bytecode, settings are fixed, and the JSON
// is written with sorted keys, 2-space indentation and a trailing newline.
//
// Usage (from anywhere; paths are resolved from this file):
//   node contracts/build.mjs [--out DIR]

import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "..");
const SRC_DIR = path.join(HERE, "src");
const DEFAULT_OUT = path.join(HERE, "artifacts");
const NODE_MODULES = path.join(REPO, "node_modules");
const PROG = "contracts/build.mjs";

// Everything that influences the bytecode, recorded verbatim in each artifact.
const SETTINGS = {
  evmVersion: "cancun",
  metadata: { bytecodeHash: "none" },
  optimizer: { enabled: true, runs: 200 },
};

function fail(message, code = 1) {
  process.stderr.write(`${PROG}: ${message}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  let out = DEFAULT_OUT;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--out") {
      if (i + 1 >= argv.length) fail("--out needs a directory argument", 2);
      out = path.resolve(argv[++i]);
    } else if (arg.startsWith("--out=")) {
      out = path.resolve(arg.slice("--out=".length));
    } else if (arg === "-h" || arg === "--help") {
      process.stdout.write(`usage: node ${PROG} [--out DIR]\n`);
      process.exit(0);
    } else {
      fail(`unknown argument ${JSON.stringify(arg)}; usage: node ${PROG} [--out DIR]`, 2);
    }
  }
  return { out };
}

function loadSolc() {
  const require = createRequire(path.join(REPO, "package.json"));
  let solc;
  try {
    solc = require("solc");
  } catch {
    fail("solc-js is not installed; run `npm ci` (or `make setup`) in the repository root");
  }
  // The version in package.json is the pin; refuse to build with anything else.
  const pinned = JSON.parse(fs.readFileSync(path.join(REPO, "package.json"), "utf8")).devDependencies.solc;
  const version = solc.version();
  if (!version.startsWith(`${pinned}+`)) {
    fail(`solc-js ${version} is installed but package.json pins ${pinned}; run \`npm ci\``);
  }
  return solc;
}

// solc asks for every import it cannot find among the sources; only the pinned OpenZeppelin
// package under node_modules is served, by its package-relative name.
function findImport(importPath) {
  if (importPath.startsWith("contracts/src/")) {
    return { error: `no such file ${importPath}` };
  }
  if (!importPath.startsWith("@openzeppelin/contracts/") || importPath.split("/").includes("..")) {
    return { error: `import ${importPath} is neither in contracts/src nor in @openzeppelin/contracts` };
  }
  const file = path.join(NODE_MODULES, importPath);
  try {
    return { contents: fs.readFileSync(file, "utf8") };
  } catch {
    return { error: `${importPath} not found under node_modules; run \`npm ci\`` };
  }
}

function readSources() {
  let names;
  try {
    names = fs.readdirSync(SRC_DIR).filter((n) => n.endsWith(".sol")).sort();
  } catch (err) {
    fail(`cannot read ${path.relative(REPO, SRC_DIR)}: ${err.message}`);
  }
  if (names.length === 0) fail(`no .sol files in ${path.relative(REPO, SRC_DIR)}`);
  const sources = {};
  for (const name of names) {
    const key = `contracts/src/${name}`;
    sources[key] = { content: fs.readFileSync(path.join(SRC_DIR, name), "utf8") };
  }
  return sources;
}

function lineCol(text, offset) {
  const before = text.slice(0, Math.max(0, offset));
  const lines = before.split("\n");
  return `${lines.length}:${lines[lines.length - 1].length + 1}`;
}

function describe(err, sources) {
  const loc = err.sourceLocation;
  let where = "";
  if (loc && loc.file) {
    const text = sources[loc.file]?.content;
    where = text !== undefined ? `${loc.file}:${lineCol(text, loc.start)}: ` : `${loc.file}: `;
  }
  return `${where}${err.type}: ${err.message}`.replace(/\s*\n\s*/g, " ");
}

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === "object") {
    const sorted = {};
    for (const key of Object.keys(value).sort()) sorted[key] = sortKeys(value[key]);
    return sorted;
  }
  return value;
}

function writeFileAtomic(file, text) {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

function main() {
  const { out } = parseArgs(process.argv.slice(2));
  const solc = loadSolc();
  const sources = readSources();
  const selection = {};
  for (const key of Object.keys(sources)) {
    selection[key] = { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] };
  }
  const input = { language: "Solidity", sources, settings: { ...SETTINGS, outputSelection: selection } };

  let output;
  try {
    output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));
  } catch (err) {
    fail(`solc crashed: ${err.message}`);
  }
  const diagnostics = output.errors ?? [];
  const errors = diagnostics.filter((d) => d.severity === "error");
  for (const warning of diagnostics.filter((d) => d.severity !== "error")) {
    process.stderr.write(`${PROG}: ${warning.severity}: ${describe(warning, sources)}\n`);
  }
  if (errors.length > 0) {
    const more = errors.length > 1 ? ` (and ${errors.length - 1} more error(s))` : "";
    fail(`compile failed: ${describe(errors[0], sources)}${more}`);
  }

  const artifacts = new Map();
  for (const key of Object.keys(sources)) {
    for (const [name, contract] of Object.entries(output.contracts?.[key] ?? {})) {
      if (artifacts.has(name)) fail(`contract name ${name} is defined twice; names must be unique`);
      artifacts.set(name, {
        abi: contract.abi,
        bytecode: `0x${contract.evm.bytecode.object}`,
        compiler: { settings: SETTINGS, version: solc.version() },
        contractName: name,
        deployedBytecode: `0x${contract.evm.deployedBytecode.object}`,
      });
    }
  }

  fs.mkdirSync(out, { recursive: true });
  for (const [name, artifact] of artifacts) {
    writeFileAtomic(path.join(out, `${name}.json`), `${JSON.stringify(sortKeys(artifact), null, 2)}\n`);
  }
  // In the committed directory, drop artifacts of contracts that no longer exist.
  if (out === DEFAULT_OUT) {
    for (const file of fs.readdirSync(out)) {
      if (file.endsWith(".json") && !artifacts.has(file.slice(0, -".json".length))) {
        fs.unlinkSync(path.join(out, file));
      }
    }
  }
  const names = [...artifacts.keys()].sort().join(", ");
  process.stdout.write(`${PROG}: wrote ${artifacts.size} artifact(s) to ${path.relative(process.cwd(), out) || "."}: ${names}\n`);
}

main();
