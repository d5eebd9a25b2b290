// The page's side of listener/crypto: same byte layouts as ecies.py, user_secret.py and
// credentials.py, built only from @noble primitives (no hand-written crypto).
import { secp256k1 } from "@noble/curves/secp256k1.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { keccak_256 } from "@noble/hashes/sha3.js";
import { bytesToHex, hexToBytes, randomBytes } from "@noble/hashes/utils.js";
import { gcm } from "@noble/ciphers/aes.js";

const IV_LEN = 12;
const PUBLIC_KEY_LEN = 65;
const EMPTY = new Uint8Array(0);

export const strip0x = (hex) => (hex.startsWith("0x") || hex.startsWith("0X") ? hex.slice(2) : hex);
export const fromHex = (hex) => hexToBytes(strip0x(hex));
export const toHex = (bytes) => "0x" + bytesToHex(bytes);

/** `libpam-web3:<checksum address>:<128-bit hex nonce>`, as make_public_secret() builds it. */
export function makePublicSecret(checksumAddress) {
  return `libpam-web3:${checksumAddress}:${bytesToHex(randomBytes(16))}`;
}

/** The v2 plaintext, compact JSON with the keys in the order the daemon writes them. */
export function userPlaintext(signatureHex, publicSecret) {
  const json = JSON.stringify({ signature: "0x" + strip0x(signatureHex).toLowerCase(), publicSecret });
  return new TextEncoder().encode(json);
}

/** ECIES to the server key: ephemeralPub(65) || iv(12) || ciphertext || tag(16). */
export function eciesEncrypt(serverPublicKey, plaintext, ephemeralSecret = secp256k1.utils.randomSecretKey(), iv = randomBytes(IV_LEN)) {
  const recipient = typeof serverPublicKey === "string" ? fromHex(serverPublicKey) : serverPublicKey;
  if (recipient.length !== PUBLIC_KEY_LEN || recipient[0] !== 4) {
    throw new Error("the server public key in config.json is not a 65-byte 0x04… key");
  }
  const sharedX = secp256k1.getSharedSecret(ephemeralSecret, recipient, true).slice(1);
  const key = hkdf(sha256, sharedX, EMPTY, EMPTY, 32);
  const sealed = gcm(key, iv).encrypt(plaintext);
  const ephemeralPub = secp256k1.getPublicKey(ephemeralSecret, false);
  const out = new Uint8Array(PUBLIC_KEY_LEN + IV_LEN + sealed.length);
  out.set(ephemeralPub, 0);
  out.set(iv, PUBLIC_KEY_LEN);
  out.set(sealed, PUBLIC_KEY_LEN + IV_LEN);
  return out;
}

/** NFT payload: nonce(12) || ciphertext || tag under keccak256(65-byte signature). */
export function decryptCredentials(signatureHex, blob) {
  const signature = fromHex(signatureHex);
  if (signature.length !== 65) throw new Error("the wallet returned a signature that is not 65 bytes");
  const key = keccak_256(signature);
  let plain;
  try {
    plain = gcm(key, blob.slice(0, IV_LEN)).decrypt(blob.slice(IV_LEN));
  } catch {
    throw new Error("the credentials did not decrypt with this wallet's signature: was the NFT issued to another wallet?");
  }
  const details = JSON.parse(new TextDecoder().decode(plain));
  return { hostname: String(details.hostname), port: Number(details.port), username: String(details.username) };
}
