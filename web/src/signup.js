// Sign up: choose a plan and days, sign the public secret, encrypt it to the server, pay.
import { PAYMENT_ID, call, findEvent, nft, read, subscriptions } from "./contracts.js";
import { eciesEncrypt, makePublicSecret, toHex, userPlaintext } from "./crypto.js";
import { approveIfNeeded, chosenDays, showTotal } from "./payment.js";
import { $, boot, clearSteps, connectOnChain, formatDate, onClick, requireBalance, stablecoinInfo, step, txLine } from "./ui.js";
import { explain, sendAndWait, signText, UserFacingError } from "./wallet.js";

let account = null;
let coin = null;

async function loadPlans(config) {
  const [count] = await read(subscriptions, config.subscriptionContract, "getTotalPlanCount");
  const select = $("plan");
  select.replaceChildren();
  for (let id = 1n; id <= count; id++) {
    const plan = await read(subscriptions, config.subscriptionContract, "getPlan", [id]);
    if (!plan.active) continue;
    const [perDay] = await read(subscriptions, config.subscriptionContract, "calculatePayment", [id, 1n, PAYMENT_ID]);
    select.append(new Option(`${plan.name}: ${coin.format(perDay)} per day`, id.toString()));
  }
  if (select.options.length === 0) throw new UserFacingError("This service offers no active plan right now; try again later.");
}

async function price(config) {
  const [total] = await read(subscriptions, config.subscriptionContract, "calculatePayment",
    [BigInt($("plan").value), chosenDays($("days")), PAYMENT_ID]);
  return total;
}

function showPrice(config) {
  return showTotal(coin, () => price(config));
}

async function buy(config) {
  clearSteps();
  const total = await price(config);
  const days = chosenDays($("days"));
  await requireBalance(config, coin, account, total);
  const publicSecret = makePublicSecret(account);
  const signing = step("Signing your access secret… confirm in your wallet");
  const signature = await signText(account, publicSecret).catch((error) => {
    signing("Signature not given.");
    throw new UserFacingError(explain(error, "signature request"));
  });
  signing("Access secret signed.");
  const blob = eciesEncrypt(config.serverPublicKey, userPlaintext(signature, publicSecret));
  step("Encrypted it to the server's key (only the server can read it).");
  await approveIfNeeded(config, coin, account, total);
  const [nftsBefore] = await read(nft, config.nftContract, "balanceOf", [account]);
  const paying = step(`Paying ${coin.format(total)} for ${days} days… confirm in your wallet`);
  const receipt = await sendAndWait({ from: account,
    ...call(subscriptions, config.subscriptionContract, "buySubscription", [BigInt($("plan").value), days, PAYMENT_ID, toHex(blob)]) },
  "purchase", (hash) => txLine("Purchase transaction", hash)).catch((error) => {
    paying(`Payment of ${coin.format(total)} not made.`);
    throw error;
  });
  const created = findEvent(subscriptions, receipt, "SubscriptionCreated");
  const id = created.subscriptionId;
  paying(`Subscription ${id} bought; it runs until ${formatDate(created.expiresAt)}.`);
  $("subscription-id").textContent = id.toString();
  await followProgress(config, id, nftsBefore);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Until the VM runs: the operator's status endpoint if configured, else a new NFT on chain. */
async function followProgress(config, id, nftsBefore) {
  const progress = $("progress");
  progress.textContent = "Waiting for the server to see your payment…";
  for (;;) {
    if (config.statusUrl) {
      const response = await fetch(`${config.statusUrl}?subscription=${id}`, { cache: "no-store" }).catch(() => null);
      const body = response && response.ok ? await response.json() : null;
      if (body) {
        progress.textContent = body.vm_running ? `Your VM is running (subscription ${id}: ${body.state}). Open the credentials page to get your login.`
          : `Subscription ${id}: ${body.state}; the VM is being prepared…`;
        if (body.vm_running) return;
      }
    } else {
      const [held] = await read(nft, config.nftContract, "balanceOf", [account]);
      if (held > nftsBefore) {
        progress.textContent = "Your access NFT has arrived: your VM is ready. Open the credentials page to get your login.";
        return;
      }
    }
    await sleep(2000);
  }
}

boot(async (config) => {
  onClick($("connect"), async () => {
    account = await connectOnChain(config);
    coin = await stablecoinInfo(config);
    await loadPlans(config);
    $("order").hidden = false;
    await showPrice(config);
  }, "wallet connection");
  $("plan").addEventListener("change", () => showPrice(config));
  $("days").addEventListener("input", () => showPrice(config));
  onClick($("buy"), () => buy(config), "purchase");
});
