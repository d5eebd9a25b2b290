// Renew: pick one of the wallet's subscriptions and pay for more days.
import { PAYMENT_ID, call, findEvent, read, subscriptions } from "./contracts.js";
import { approveIfNeeded, chosenDays, showTotal } from "./payment.js";
import { $, boot, clearSteps, connectOnChain, formatDate, onClick, requireBalance, stablecoinInfo, step, txLine } from "./ui.js";
import { sendAndWait, UserFacingError } from "./wallet.js";

let account = null;
let coin = null;

async function loadSubscriptions(config) {
  const [ids] = await read(subscriptions, config.subscriptionContract, "getSubscriptionsBySubscriber", [account]);
  const select = $("subscription");
  select.replaceChildren();
  for (const id of ids) {
    const sub = await read(subscriptions, config.subscriptionContract, "getSubscription", [id]);
    if (sub.cancelled) continue;
    const label = `#${id}, ${sub.isActive ? "until" : "lapsed"} ${formatDate(sub.expiresAt).slice(0, 10)}`;
    select.append(new Option(label, id.toString()));
  }
  if (select.options.length === 0) throw new UserFacingError("This wallet has no subscription to renew; buy one on the sign-up page.");
}

async function price(config) {
  const sub = await read(subscriptions, config.subscriptionContract, "getSubscription", [BigInt($("subscription").value)]);
  const [total] = await read(subscriptions, config.subscriptionContract, "calculatePayment", [sub.planId, chosenDays($("days")), PAYMENT_ID]);
  return total;
}

function showPrice(config) {
  return showTotal(coin, () => price(config));
}

async function renew(config) {
  clearSteps();
  const id = BigInt($("subscription").value);
  const days = chosenDays($("days"));
  const total = await price(config);
  await requireBalance(config, coin, account, total);
  await approveIfNeeded(config, coin, account, total);
  const paying = step(`Paying ${coin.format(total)} for ${days} more days… confirm in your wallet`);
  const receipt = await sendAndWait({ from: account,
    ...call(subscriptions, config.subscriptionContract, "extendSubscription", [id, days, PAYMENT_ID]) },
  "renewal", (hash) => txLine("Renewal transaction", hash)).catch((error) => {
    paying(`Payment of ${coin.format(total)} not made.`);
    throw error;
  });
  const extended = findEvent(subscriptions, receipt, "SubscriptionExtended");
  paying(`Subscription ${id} now runs until ${formatDate(extended.newExpiresAt)}.`);
  const expiry = $("new-expiry");
  expiry.textContent = formatDate(extended.newExpiresAt);
  expiry.dateTime = new Date(Number(extended.newExpiresAt) * 1000).toISOString();
  await loadSubscriptions(config);
  $("subscription").value = id.toString();
}

boot(async (config) => {
  onClick($("connect"), async () => {
    account = await connectOnChain(config);
    coin = await stablecoinInfo(config);
    await loadSubscriptions(config);
    $("order").hidden = false;
    await showPrice(config);
  }, "wallet connection");
  $("subscription").addEventListener("change", () => showPrice(config));
  $("days").addEventListener("input", () => showPrice(config));
  onClick($("renew"), () => renew(config), "renewal");
});
