// The NFT's own page (animation_url): #token=<id>&nft=<0xaddr>&chain=<id>. It talks only to the
// wallet (eth_call getAccessData, personal_sign) and decrypts with @noble's AES-GCM, not WebCrypto:
// wallets open it as a data: URL, which is no secure context, so crypto.subtle is missing there.
import { gcm } from "@noble/ciphers/aes.js";
import { keccak_256 } from "@noble/hashes/sha3.js";

const $ = (id) => document.getElementById(id);
const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
const unhex = (text) => Uint8Array.from(text.replace(/^0x/, "").match(/../g) || [], (h) => parseInt(h, 16));
const say = (text) => { $("msg").textContent = text; };

function fragment() {
  const args = new URLSearchParams(location.hash.slice(1));
  const token = args.get("token"), nft = args.get("nft"), chain = args.get("chain");
  if (!/^\d+$/.test(token || "") || !/^0x[0-9a-fA-F]{40}$/.test(nft || "") || !/^\d+$/.test(chain || "")) {
    throw new Error("This page needs #token=<id>&nft=<0x address>&chain=<id> in its address.");
  }
  return { token: BigInt(token), nft, chain: Number(chain) };
}

/** (bytes userEncrypted, string publicSecret, …) from the ABI-encoded return data. */
function decode(data) {
  const raw = unhex(data);
  const word = (at) => Number(BigInt("0x" + hex(raw.slice(at, at + 32))));
  const dyn = (at) => { const start = word(at); return raw.slice(start + 32, start + 32 + word(start)); };
  return { blob: dyn(0), secret: new TextDecoder().decode(dyn(32)) };
}

async function reveal() {
  const eth = window.ethereum;
  if (!eth) throw new Error("No wallet found: open this page in a wallet's browser or install a wallet.");
  const { token, nft, chain } = fragment();
  const [account] = await eth.request({ method: "eth_requestAccounts" });
  const onChain = parseInt(await eth.request({ method: "eth_chainId" }), 16);
  if (onChain !== chain) throw new Error(`Your wallet is on chain ${onChain}; this NFT lives on chain ${chain}. Switch networks and retry.`);
  const owner = await eth.request({ method: "eth_call", params: [{ to: nft, data: __OWNER_OF__ + token.toString(16).padStart(64, "0") }, "latest"] });
  if (owner.slice(-40).toLowerCase() !== account.slice(2).toLowerCase()) throw new Error(`NFT #${token} is not held by ${account}; connect the wallet that holds it.`);
  const data = await eth.request({ method: "eth_call", params: [{ to: nft, data: __GET_ACCESS_DATA__ + token.toString(16).padStart(64, "0") }, "latest"] });
  const { blob, secret } = decode(data);
  if (!blob.length) throw new Error("This NFT carries no credentials yet.");
  const signature = await eth.request({ method: "personal_sign", params: ["0x" + hex(new TextEncoder().encode(secret)), account] });
  let plain;
  try {
    plain = gcm(keccak_256(unhex(signature)), blob.slice(0, 12)).decrypt(blob.slice(12));
  } catch {
    throw new Error("Decryption failed: this wallet's signature does not open these credentials.");
  }
  const d = JSON.parse(new TextDecoder().decode(plain));
  $("out").textContent = `ssh -p ${Number(d.port)} ${d.username}@${d.hostname}`;
  say(`Host ${d.hostname}, port ${Number(d.port)}, user ${d.username}`);
}

$("go").onclick = () => reveal().catch((e) => say(e.code === 4001 ? "You rejected the signature; nothing was revealed." : e.message));
