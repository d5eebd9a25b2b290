// Credentials: re-sign the NFT's public secret and decrypt the connection details, in the page.
import { nft, read } from "./contracts.js";
import { decryptCredentials, fromHex } from "./crypto.js";
import { $, boot, connectOnChain, formatDate, onClick } from "./ui.js";
import { explain, signText, UserFacingError } from "./wallet.js";

let account = null;

/** One option per NFT of ours the wallet holds: token id and expiry, read from the chain. */
async function tokenOption(config, index) {
  const [token] = await read(nft, config.nftContract, "tokenOfOwnerByIndex", [account, index]);
  const data = await read(nft, config.nftContract, "getAccessData", [token]);
  return new Option(`NFT #${token}, ${expiryText(data.expiresAt)}`, token.toString());
}

/** "expires 2026-12-31 UTC", "expired …", or "no expiry" (the contract's 0). */
function expiryText(expiresAt) {
  if (expiresAt === 0n) return "no expiry";
  const day = formatDate(expiresAt).slice(0, 10);
  return expiresAt * 1000n < BigInt(Date.now()) ? `expired ${day} UTC` : `expires ${day} UTC`;
}

/** Fill the NFT list; with none held, offer the token id field instead (and say why). */
async function loadTokens(config) {
  const [count] = await read(nft, config.nftContract, "balanceOf", [account]);
  const options = [];
  for (let index = 0n; index < count; index++) options.push(await tokenOption(config, index));
  $("token").replaceChildren(...options);
  $("pick").hidden = options.length === 0;
  $("manual").hidden = options.length > 0;
  if (options.length === 0) {
    throw new UserFacingError("This wallet holds no access NFT yet. If you just paid, wait a minute and press \"Reload from wallet\"; or type the token id below.");
  }
}

/** The chosen token id: from the list, or from the fallback field when the list is empty. */
function chosenToken() {
  const text = ($("pick").hidden ? $("token-id").value : $("token").value).trim();
  if (!/^[0-9]+$/.test(text)) throw new UserFacingError("Choose one of your NFTs, or type its token id (a whole number).");
  return BigInt(text);
}

async function reveal(config) {
  $("details").hidden = true;
  const token = chosenToken();
  const [owner] = await read(nft, config.nftContract, "ownerOf", [token]).catch(() => {
    throw new UserFacingError(`NFT #${token} does not exist on this service's contract.`);
  });
  if (owner.toLowerCase() !== account.toLowerCase()) {
    throw new UserFacingError(`NFT #${token} is not yours: it belongs to ${owner}. Connect the wallet that holds it.`);
  }
  const data = await read(nft, config.nftContract, "getAccessData", [token]);
  const blob = fromHex(data.userEncrypted);
  if (blob.length === 0) throw new UserFacingError(`NFT #${token} carries no credentials yet; the operator's server could not read your signature.`);
  const signature = await signText(account, data.publicSecret).catch((error) => {
    throw new UserFacingError(explain(error, "signature request"));
  });
  const details = decryptCredentials(signature, blob);
  $("host").textContent = details.hostname;
  $("port").textContent = String(details.port);
  $("user").textContent = details.username;
  $("ssh").textContent = `ssh -p ${details.port} ${details.username}@${details.hostname}`;
  $("details").hidden = false;
}

boot(async (config) => {
  onClick($("connect"), async () => {
    account = await connectOnChain(config);
    $("order").hidden = false;
    await loadTokens(config);
  }, "wallet connection");
  onClick($("reveal"), () => reveal(config), "decryption");
});
