// Build the subscriber's pages: each web/src/<page>.js is bundled by esbuild (pinned in
// package-lock.json) and inlined with web/pages/style.css into web/pages/<page>.html.
// Output: blockhost_data/web/ (committed) or --out DIR. Same inputs → the same bytes.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { id } from "ethers/hash";

const WEB = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(WEB, "..");
const PAGES = ["signup", "renew", "credentials", "nft-credentials"];

function parseArgs(argv) {
  let out = join(ROOT, "blockhost_data", "web");
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--out" && i + 1 < argv.length) out = resolve(argv[++i]);
    else {
      process.stderr.write(`web/build.mjs: unknown argument ${JSON.stringify(argv[i])}; usage: node web/build.mjs [--out DIR]\n`);
      process.exit(2);
    }
  }
  return out;
}

const selector = (signature) => JSON.stringify(id(signature).slice(0, 10));

async function bundle(page) {
  const result = await build({
    entryPoints: [join(WEB, "src", `${page}.js`)],
    absWorkingDir: ROOT,
    bundle: true,
    minify: true,
    format: "iife",
    target: "es2020",
    platform: "browser",
    charset: "utf8",
    legalComments: "none",
    write: false,
    define: {
      __GET_ACCESS_DATA__: selector("getAccessData(uint256)"),
      __OWNER_OF__: selector("ownerOf(uint256)"),
    },
  });
  const code = result.outputFiles[0].text.trimEnd();
  if (/<\/script|<!--/i.test(code)) throw new Error(`${page}: the bundle contains </script or <!-- and cannot be inlined`);
  return code;
}

async function main() {
  const out = parseArgs(process.argv.slice(2));
  mkdirSync(out, { recursive: true });
  const style = readFileSync(join(WEB, "pages", "style.css"), "utf8").trimEnd();
  for (const page of PAGES) {
    const template = readFileSync(join(WEB, "pages", `${page}.html`), "utf8");
    const code = await bundle(page);
    // Function replacers: a `$` in the code must not be read as a replacement pattern.
    const html = template.replace("<!--STYLE-->", () => style).replace("<!--SCRIPT-->", () => code);
    writeFileSync(join(out, `${page}.html`), html);
    process.stdout.write(`${page}.html ${Buffer.byteLength(html)} bytes\n`);
  }
}

main().catch((error) => {
  process.stderr.write(`web/build.mjs: ${error.message.split("\n")[0]}\n`);
  process.exit(1);
});
