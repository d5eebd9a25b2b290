// The few contract calls the pages make, encoded with ethers' ABI coder and sent via the wallet.
import { Interface } from "ethers/abi";
import { request } from "./wallet.js";

export const PAYMENT_ID = 1n;

export const subscriptions = new Interface([
  "function getTotalPlanCount() view returns (uint256)",
  "function getPlan(uint256) view returns (string name, uint256 pricePerDayUsdCents, bool active)",
  "function calculatePayment(uint256 planId, uint256 days_, uint256 paymentMethodId) view returns (uint256)",
  "function buySubscription(uint256 planId, uint256 days_, uint256 paymentMethodId, bytes userEncrypted) returns (uint256)",
  "function extendSubscription(uint256 subscriptionId, uint256 days_, uint256 paymentMethodId)",
  "function getSubscriptionsBySubscriber(address) view returns (uint256[])",
  "function getSubscription(uint256) view returns (uint256 planId, address subscriber, uint256 expiresAt, bool isActive, bool cancelled)",
  "event SubscriptionCreated(uint256 indexed subscriptionId, uint256 indexed planId, address indexed subscriber, uint256 expiresAt, uint256 paidAmount, address paymentToken, bytes userEncrypted)",
  "event SubscriptionExtended(uint256 indexed subscriptionId, uint256 indexed planId, address indexed extendedBy, uint256 newExpiresAt, uint256 paidAmount, address paymentToken)",
]);

export const erc20 = new Interface([
  "function balanceOf(address) view returns (uint256)",
  "function allowance(address owner, address spender) view returns (uint256)",
  "function approve(address spender, uint256 amount) returns (bool)",
  "function decimals() view returns (uint8)",
  "function symbol() view returns (string)",
]);

export const nft = new Interface([
  "function balanceOf(address) view returns (uint256)",
  "function tokenOfOwnerByIndex(address owner, uint256 index) view returns (uint256)",
  "function ownerOf(uint256) view returns (address)",
  "function getAccessData(uint256) view returns (bytes userEncrypted, string publicSecret, uint256 issuedAt, uint256 expiresAt)",
]);

/** eth_call through the wallet; returns the decoded result. */
export async function read(abi, to, name, args = []) {
  const data = await request("eth_call", [{ to, data: abi.encodeFunctionData(name, args) }, "latest"]);
  return abi.decodeFunctionResult(name, data);
}

export function call(abi, to, name, args) {
  return { to, data: abi.encodeFunctionData(name, args) };
}

/** The first log of `eventName` in a receipt, decoded. */
export function findEvent(abi, receipt, eventName) {
  const topic = abi.getEvent(eventName).topicHash;
  for (const log of receipt.logs) {
    if (log.topics[0] === topic) return abi.parseLog(log).args;
  }
  return null;
}
