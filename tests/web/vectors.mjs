// Runs web/src/crypto.js (the pages' own code) under node for the shared test vectors.
// stdin: {"op": "encrypt", "publicKey", "plaintextHex"} | {"op": "decrypt", "signature", "blobHex"}
import { readFileSync } from "node:fs";
import { decryptCredentials, eciesEncrypt, fromHex, makePublicSecret, toHex, userPlaintext } from "../../web/src/crypto.js";

const request = JSON.parse(readFileSync(0, "utf8"));
let result;
if (request.op === "encrypt") {
  result = { blob: toHex(eciesEncrypt(request.publicKey, fromHex(request.plaintextHex))) };
} else if (request.op === "payload") {
  const publicSecret = request.publicSecret ?? makePublicSecret(request.address);
  result = { publicSecret, plaintextHex: toHex(userPlaintext(request.signature, publicSecret)) };
} else if (request.op === "decrypt") {
  result = decryptCredentials(request.signature, fromHex(request.blobHex));
} else {
  throw new Error(`unknown op ${request.op}`);
}
process.stdout.write(JSON.stringify(result));
