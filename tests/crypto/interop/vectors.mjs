// Cross-implementation vectors for SPEC §4, built the way a browser signup page would:
// @noble/curves (secp256k1 ECDH), @noble/hashes (HKDF-SHA256, keccak-256),
// @noble/ciphers (AES-256-GCM) and ethers (personal_sign). None of this shares code with
// the Python side (pyca/cryptography, eth-account).
//
// Reads one JSON request on stdin, writes one JSON answer on stdout. Secrets travel only
// through these pipes (test keys), never through argv.
//   {"mode": "signup", "serverPublicKey": "04…"}
//   {"mode": "nft-decrypt", "walletKey": "0x…", "publicSecret": "…", "blob": "…hex"}
//   {"mode": "nft-encrypt", "walletKey": "0x…", "publicSecret": "…", "details": {…}}
import { gcm } from "@noble/ciphers/aes.js";
import { secp256k1 } from "@noble/curves/secp256k1.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { keccak_256 } from "@noble/hashes/sha3.js";
import { bytesToHex, hexToBytes, randomBytes } from "@noble/hashes/utils.js";
import { Wallet } from "ethers";

const strip = (hex) => (hex.startsWith("0x") ? hex.slice(2) : hex);
const utf8 = new TextEncoder();

// ephemeralPub(65) || iv(12) || ciphertext || tag(16); key = HKDF-SHA256(shared x, no salt/info)
function eciesEncrypt(serverPublicKey, plaintext) {
  const ephemeral = secp256k1.utils.randomSecretKey();
  const ephemeralPub = secp256k1.getPublicKey(ephemeral, false);
  const sharedX = secp256k1.getSharedSecret(ephemeral, serverPublicKey, true).slice(1);
  const key = hkdf(sha256, sharedX, new Uint8Array(0), new Uint8Array(0), 32);
  const iv = randomBytes(12);
  const sealed = gcm(key, iv).encrypt(plaintext);
  const out = new Uint8Array(65 + 12 + sealed.length);
  out.set(ephemeralPub, 0);
  out.set(iv, 65);
  out.set(sealed, 77);
  return out;
}

function signatureKey(signatureHex) {
  return keccak_256(hexToBytes(strip(signatureHex)));
}

async function main() {
  let input = "";
  for await (const chunk of process.stdin) input += chunk;
  const request = JSON.parse(input);
  if (request.mode === "signup") {
    const server = hexToBytes(strip(request.serverPublicKey));
    const wallet = new Wallet("0x" + bytesToHex(secp256k1.utils.randomSecretKey()));
    const nonce = bytesToHex(randomBytes(16));
    const publicSecret = `libpam-web3:${wallet.address}:${nonce}`;
    const signature = await wallet.signMessage(publicSecret);
    const v2 = eciesEncrypt(server, utf8.encode(JSON.stringify({ signature, publicSecret })));
    const legacySecret = request.legacySecret ?? "blockhost-access";
    const legacySignature = await wallet.signMessage(legacySecret);
    const legacy = eciesEncrypt(server, utf8.encode(legacySignature));
    console.log(JSON.stringify({
      walletKey: wallet.privateKey, address: wallet.address, publicSecret, signature,
      v2: bytesToHex(v2), legacy: bytesToHex(legacy), legacySignature,
    }));
  } else if (request.mode === "nft-decrypt") {
    const wallet = new Wallet(request.walletKey);
    const signature = await wallet.signMessage(request.publicSecret); // the user re-signs
    const blob = hexToBytes(strip(request.blob));
    const plain = gcm(signatureKey(signature), blob.slice(0, 12)).decrypt(blob.slice(12));
    console.log(JSON.stringify({ plaintext: new TextDecoder().decode(plain) }));
  } else if (request.mode === "nft-encrypt") {
    const wallet = new Wallet(request.walletKey);
    const signature = await wallet.signMessage(request.publicSecret);
    const nonce = randomBytes(12);
    const sealed = gcm(signatureKey(signature), nonce).encrypt(
      utf8.encode(JSON.stringify(request.details)));
    const out = new Uint8Array(12 + sealed.length);
    out.set(nonce, 0);
    out.set(sealed, 12);
    console.log(JSON.stringify({ blob: bytesToHex(out) }));
  } else {
    throw new Error(`unknown mode ${request.mode}`);
  }
}

main().catch((error) => {
  console.error(String(error && error.message ? error.message : error));
  process.exit(1);
});
