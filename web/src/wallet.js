// EIP-1193 calls and the human sentences for what goes wrong with them.
import { revertData, revertReason } from "./revert.js";

export class UserFacingError extends Error {}

const REJECTED = 4001;
const UNKNOWN_CHAIN = 4902;

export function provider() {
  if (!window.ethereum || typeof window.ethereum.request !== "function") {
    throw new UserFacingError("No wallet found. Install a browser wallet (for example MetaMask or Rabby), unlock it and reload this page.");
  }
  return window.ethereum;
}

/** A wallet error as one sentence a subscriber can act on. */
export function explain(error, action) {
  if (error instanceof UserFacingError) return error.message;
  const code = error && (error.code ?? error.error?.code);
  const text = String((error && (error.data?.message || error.message)) || error);
  if (code === REJECTED) return `You rejected the ${action} in your wallet. Nothing was sent; press the button again when you are ready.`;
  if (/insufficient funds/i.test(text)) return "Your wallet has not enough of the chain's native coin to pay the transaction fee; add some and try again.";
  const reason = revertReason(revertData(error));
  if (reason) return `The ${action} would fail on chain: ${reason}. Nothing was charged.`;
  if (/revert/i.test(text)) return `The ${action} would fail on chain (${text.slice(0, 160)}); nothing was charged.`;
  return `The ${action} failed: ${text.slice(0, 200)}`;
}

export async function request(method, params = []) {
  return provider().request({ method, params });
}

export async function connect() {
  const accounts = await request("eth_requestAccounts");
  if (!accounts || accounts.length === 0) throw new UserFacingError("Your wallet shared no account; unlock it and choose an account.");
  return accounts[0];
}

export async function currentChainId() {
  return Number.parseInt(await request("eth_chainId"), 16);
}

/** Ask the wallet to switch (adding the chain with the configured RPC if it does not know it). */
export async function switchChain(config) {
  const chainId = "0x" + config.chainId.toString(16);
  try {
    await request("wallet_switchEthereumChain", [{ chainId }]);
  } catch (error) {
    if ((error.code ?? error.data?.originalError?.code) !== UNKNOWN_CHAIN || !config.rpcUrl) throw error;
    await request("wallet_addEthereumChain", [{ chainId, chainName: `Chain ${config.chainId}`,
      rpcUrls: [config.rpcUrl], nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 } }]);
  }
}

export async function signText(account, text) {
  const hex = "0x" + Array.from(new TextEncoder().encode(text), (b) => b.toString(16).padStart(2, "0")).join("");
  return request("personal_sign", [hex, account]);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Send, then wait for the receipt; a reverted transaction becomes a UserFacingError. */
export async function sendAndWait(tx, what, onHash) {
  const hash = await request("eth_sendTransaction", [tx]);
  onHash(hash);
  for (;;) {
    const receipt = await request("eth_getTransactionReceipt", [hash]);
    if (receipt) {
      if (receipt.status !== "0x1") {
        const why = await replayReason(hash, receipt.blockNumber);
        throw new UserFacingError(`The ${what} transaction ${hash} was reverted on chain: ${why}. Nothing was charged beyond its fee.`);
      }
      return receipt;
    }
    await sleep(1000);
  }
}

/** Why a mined transaction reverted: the same call again at its block, its revert data in words. */
async function replayReason(hash, blockNumber) {
  const unknown = "the node did not say why (look the transaction up in a block explorer)";
  try {
    const tx = await request("eth_getTransactionByHash", [hash]);
    await request("eth_call", [{ from: tx.from, to: tx.to, data: tx.input, value: tx.value, gas: tx.gas }, blockNumber]);
    return unknown;
  } catch (error) {
    if (/out of gas/i.test(String(error?.message))) return "it ran out of gas (the gas limit was too low)";
    return revertReason(revertData(error)) || unknown;
  }
}
