// What every page shares: config.json, the status line, the step list and the chain guard.
import { getAddress } from "ethers/address";
import { formatUnits } from "ethers/utils";
import { connect, currentChainId, explain, switchChain, UserFacingError } from "./wallet.js";
import { erc20, read } from "./contracts.js";

export const $ = (id) => document.getElementById(id);

export async function loadConfig() {
  const response = await fetch("./config.json", { cache: "no-store" });
  if (!response.ok) throw new UserFacingError("This page has no config.json next to it; ask the operator to run `blockhost web export` again.");
  const config = await response.json();
  for (const key of ["chainId", "subscriptionContract", "nftContract", "stablecoin", "serverPublicKey"]) {
    if (config[key] === undefined || config[key] === null || config[key] === "") {
      throw new UserFacingError(`config.json has no ${key}; ask the operator to run \`blockhost web export\` again.`);
    }
  }
  return config;
}

/** Show one error sentence (or clear it); screen readers hear it (role=alert). */
export function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

/** Append a step line; returns a function that updates it. */
export function step(text) {
  const item = document.createElement("li");
  item.textContent = text;
  $("steps").append(item);
  return (more) => { item.textContent = more; };
}

export function txLine(label, hash) {
  const item = document.createElement("li");
  item.append(`${label}: `);
  const code = document.createElement("code");
  code.textContent = hash;
  item.append(code);
  $("steps").append(item);
}

export function clearSteps() {
  $("steps").replaceChildren();
  showError("");
}

export function formatDate(seconds) {
  return new Date(Number(seconds) * 1000).toISOString().replace(".000Z", " UTC").replace("T", " ");
}

/** Connect, then make sure the wallet is on the configured chain (offering to switch). */
export async function connectOnChain(config) {
  const account = getAddress(await connect());
  const chainId = await currentChainId();
  if (chainId !== Number(config.chainId)) {
    const button = $("switch");
    button.hidden = false;
    button.onclick = async () => {
      try {
        await switchChain(config);
        button.hidden = true;
        showError("");
        $("connect").click();
      } catch (error) {
        showError(explain(error, "network switch"));
      }
    };
    throw new UserFacingError(`Your wallet is on chain ${chainId}, but this service runs on chain ${config.chainId}. Press "Switch network" or change it in your wallet.`);
  }
  $("switch").hidden = true;
  $("account").textContent = account;
  $("connect").textContent = "Reload from wallet";
  return account;
}

export async function stablecoinInfo(config) {
  const [decimals] = await read(erc20, config.stablecoin, "decimals");
  const [symbol] = await read(erc20, config.stablecoin, "symbol");
  return { decimals: Number(decimals), symbol, format: (amount) => `${formatUnits(amount, decimals)} ${symbol}` };
}

/** Refuse early when the wallet cannot pay `price`: one sentence with both amounts. */
export async function requireBalance(config, coin, account, price) {
  const [balance] = await read(erc20, config.stablecoin, "balanceOf", [account]);
  if (balance < price) {
    throw new UserFacingError(`Insufficient balance: this costs ${coin.format(price)} but your wallet holds ${coin.format(balance)}. Top up and try again.`);
  }
}

/** Run a button's action with its errors shown as sentences; the button is busy meanwhile. */
export function onClick(button, action, what) {
  button.addEventListener("click", async () => {
    button.disabled = true;
    showError("");
    try {
      await action();
    } catch (error) {
      showError(explain(error, what));
    } finally {
      button.disabled = false;
    }
  });
}

export async function boot(main) {
  try {
    await main(await loadConfig());
  } catch (error) {
    showError(explain(error, "page set-up"));
  }
}
