// Why a transaction reverted, in words: the revert data decoded against the errors our contracts
// (and their stablecoin) can raise, plus Solidity's Error(string) and Panic(uint256).
import { Interface } from "ethers/abi";

// Signatures without parameter names, so each appears verbatim in the bundle (a test checks
// that every error in contracts/artifacts/ is here).
export const contractErrors = new Interface([
  "error DaysMustBePositive()",
  "error DaysTooLarge(uint256,uint256)",
  "error InvalidAddress()",
  "error NoBalanceToWithdraw()",
  "error PaymentMethodNotActive(uint256)",
  "error PaymentMethodNotFound(uint256)",
  "error PaymentShortfall(uint256,uint256)",
  "error PlanNotActive(uint256)",
  "error PlanNotFound(uint256)",
  "error PlanPriceMustBePositive()",
  "error PrimaryStablecoinNotSet()",
  "error ReentrancyGuardReentrantCall()",
  "error SafeERC20FailedOperation(address)",
  "error SubscriptionAlreadyCancelled(uint256)",
  "error SubscriptionNotFound(uint256)",
  "error UnsupportedDecimals(uint8)",
  "error UserEncryptedTooLarge(uint256,uint256)",
  "error OwnableInvalidOwner(address)",
  "error OwnableUnauthorizedAccount(address)",
  "error ERC20InsufficientAllowance(address,uint256,uint256)",
  "error ERC20InsufficientBalance(address,uint256,uint256)",
  "error ERC20InvalidApprover(address)",
  "error ERC20InvalidReceiver(address)",
  "error ERC20InvalidSender(address)",
  "error ERC20InvalidSpender(address)",
  "error ERC721EnumerableForbiddenBatchMint()",
  "error ERC721IncorrectOwner(address,uint256,address)",
  "error ERC721InsufficientApproval(address,uint256)",
  "error ERC721InvalidApprover(address)",
  "error ERC721InvalidOperator(address)",
  "error ERC721InvalidOwner(address)",
  "error ERC721InvalidReceiver(address)",
  "error ERC721InvalidSender(address)",
  "error ERC721NonexistentToken(uint256)",
  "error ERC721OutOfBoundsIndex(address,uint256)",
  "error EmptyPageChunk()",
  "error PageNotBase64(uint256)",
  "error StringsInsufficientHexLength(uint256,uint256)",
]);

// The errors a subscriber can meet, as words; any other error is shown by its name.
const WORDS = {
  DaysMustBePositive: () => "at least one day must be bought",
  DaysTooLarge: ([, max]) => `at most ${max} days can be paid at once`,
  PaymentMethodNotActive: () => "the operator has paused stablecoin payments",
  PaymentMethodNotFound: () => "the operator has not set up stablecoin payments",
  PrimaryStablecoinNotSet: () => "the operator has not set up stablecoin payments",
  PaymentShortfall: () => "the stablecoin moved less than the price (a token with transfer fees is not supported)",
  PlanNotActive: ([plan]) => `plan ${plan} is no longer offered; reload the page to see the current plans`,
  PlanNotFound: ([plan]) => `plan ${plan} does not exist`,
  SubscriptionAlreadyCancelled: ([id]) => `subscription ${id} was cancelled and cannot be renewed`,
  SubscriptionNotFound: ([id]) => `subscription ${id} does not exist`,
  UserEncryptedTooLarge: ([, max]) => `the encrypted secret is longer than the contract's ${max} bytes`,
  ERC20InsufficientAllowance: () => "the stablecoin allowance for the contract is smaller than the price",
  ERC20InsufficientBalance: () => "your stablecoin balance is smaller than the price",
  Error: ([message]) => `the contract said "${message}"`,
};

/** The revert data (0x…) a wallet or node put somewhere in its error, or null. */
export function revertData(error) {
  const places = [error?.data, error?.data?.data, error?.error?.data, error?.error?.data?.data,
    error?.data?.originalError?.data, error?.info?.error?.data];
  const found = places.find((value) => typeof value === "string" && /^0x([0-9a-f]{2})*$/i.test(value) && value.length >= 10);
  return found || null;
}

/** Revert data as words, e.g. "plan 1 is no longer offered… (error PlanNotActive)"; null if unknown. */
export function revertReason(data) {
  if (!data || data.length < 10) return null;
  let parsed = null;
  try {
    parsed = contractErrors.parseError(data);
  } catch {
    return null;
  }
  if (!parsed) return `an error this page does not know (selector ${data.slice(0, 10)})`;
  if (parsed.name === "Panic") return `the contract failed (Solidity panic 0x${parsed.args[0].toString(16)})`;
  const words = WORDS[parsed.name];
  return words ? `${words(parsed.args)} (error ${parsed.name})` : `the contract refused it with ${parsed.name}`;
}
