// Approve exactly the price (never an unlimited allowance), only when the allowance is short.
import { call, erc20, read } from "./contracts.js";
import { explain, sendAndWait, UserFacingError } from "./wallet.js";
import { $, showError, step, txLine } from "./ui.js";

export async function approveIfNeeded(config, coin, account, price) {
  const [allowance] = await read(erc20, config.stablecoin, "allowance", [account, config.subscriptionContract]);
  if (allowance >= price) return;
  const done = step(`Approving ${coin.format(price)} for the subscription contract… confirm in your wallet`);
  await sendAndWait({ from: account, ...call(erc20, config.stablecoin, "approve", [config.subscriptionContract, price]) },
    "approval", (hash) => txLine("Approval transaction", hash)).catch((error) => {
    done("Approval not given.");
    throw error;
  });
  done(`Approved ${coin.format(price)}.`);
}

/** Whole days from the days field, or a sentence saying what is wrong with it. */
export function chosenDays(input) {
  const days = Number(input.value);
  if (!Number.isInteger(days) || days < 1 || days > 36500) {
    throw new UserFacingError("Days must be a whole number from 1 to 36500.");
  }
  return BigInt(days);
}

/** Show the price that `lookup` resolves in the total field, or why it could not be found. */
export async function showTotal(coin, lookup) {
  try {
    $("total").textContent = coin.format(await lookup());
    showError("");
  } catch (error) {
    $("total").textContent = "–";
    showError(explain(error, "price lookup"));
  }
}
