// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @title BlockhostSubscriptions
/// @notice Sells day-based VM subscriptions for a USD stablecoin. The provisioning daemon follows
///         the events below; their signatures are fixed because it must also follow the
///         already-deployed reference contract unchanged.
/// @dev Differences from the reference, all deliberate:
///      - Only payment method 1 (the primary stablecoin) exists. The reference priced other
///        tokens from Uniswap V2 spot reserves, which a flash loan can move within one
///        transaction; there is no `addPaymentMethod`, and any id other than 1 reverts
///        `PaymentMethodNotFound`.
///      - `userEncrypted` is capped at `MAX_USER_ENCRYPTED_LENGTH` bytes so that nobody can make
///        the daemon fetch and journal arbitrarily large logs.
///      - `days_` is capped at `MAX_DAYS` so that price and expiry arithmetic stay far from
///        overflow and an expiry is always a plausible date.
///      - The amount actually received is checked (fee-on-transfer tokens are rejected), so the
///        `paidAmount` in an event is always what the contract holds.
///      - Subscriptions are indexed per subscriber on write, so `getSubscriptionsBySubscriber`
///        does not scan every subscription.
contract BlockhostSubscriptions is Ownable, ReentrancyGuard {
    using SafeERC20 for IERC20;

    // ------------------------------------------------------------------ types

    struct Plan {
        string name;
        uint256 pricePerDayUsdCents;
        bool active;
    }

    struct Subscription {
        uint256 planId;
        address subscriber;
        bool cancelled;
        uint256 expiresAt;
    }

    struct PaymentMethod {
        address tokenAddress;
        address pairAddress;
        address stablecoinAddress;
        uint8 tokenDecimals;
        uint8 stablecoinDecimals;
        bool active;
    }

    // -------------------------------------------------------------- constants

    /// @notice The only payment method: the primary stablecoin, priced at one USD per token.
    uint256 public constant STABLECOIN_PAYMENT_ID = 1;

    /// @notice Largest accepted `userEncrypted` (an ECIES-wrapped signature is ~350 bytes).
    uint256 public constant MAX_USER_ENCRYPTED_LENGTH = 1024;

    /// @notice Longest purchase or extension in one call (100 years).
    uint256 public constant MAX_DAYS = 36500;

    /// @notice Accepted stablecoin decimals. At least 2, so that a price in cents is always a
    ///         whole, non-zero number of base units; at most 36, so that 10**decimals stays sane.
    uint8 public constant MIN_STABLECOIN_DECIMALS = 2;
    uint8 public constant MAX_STABLECOIN_DECIMALS = 36;

    // ------------------------------------------------------------------ state

    uint256 public nextPlanId = 1;
    uint256 public nextSubscriptionId = 1;

    mapping(uint256 => Plan) private _plans;
    mapping(uint256 => Subscription) private _subscriptions;
    mapping(address => uint256[]) private _subscriptionsBySubscriber;
    PaymentMethod private _stablecoin;

    // ----------------------------------------------------------------- events

    event PlanCreated(uint256 indexed planId, string name, uint256 pricePerDayUsdCents);
    event PlanUpdated(uint256 indexed planId, string name, uint256 pricePerDayUsdCents, bool active);
    event SubscriptionCreated(
        uint256 indexed subscriptionId,
        uint256 indexed planId,
        address indexed subscriber,
        uint256 expiresAt,
        uint256 paidAmount,
        address paymentToken,
        bytes userEncrypted
    );
    event SubscriptionExtended(
        uint256 indexed subscriptionId,
        uint256 indexed planId,
        address indexed extendedBy,
        uint256 newExpiresAt,
        uint256 paidAmount,
        address paymentToken
    );
    event SubscriptionCancelled(uint256 indexed subscriptionId, uint256 indexed planId, address indexed subscriber);
    event PrimaryStablecoinSet(address indexed stablecoinAddress, uint8 decimals);
    event PaymentMethodUpdated(uint256 indexed paymentMethodId, bool active);
    event FundsWithdrawn(address indexed token, address indexed to, uint256 amount);

    // ----------------------------------------------------------------- errors

    error PlanNotFound(uint256 planId);
    error PlanNotActive(uint256 planId);
    error PlanPriceMustBePositive();
    error SubscriptionNotFound(uint256 subscriptionId);
    error SubscriptionAlreadyCancelled(uint256 subscriptionId);
    error PaymentMethodNotFound(uint256 paymentMethodId);
    error PaymentMethodNotActive(uint256 paymentMethodId);
    error PrimaryStablecoinNotSet();
    error InvalidAddress();
    error DaysMustBePositive();
    error NoBalanceToWithdraw();
    error DaysTooLarge(uint256 days_, uint256 maxDays);
    error UserEncryptedTooLarge(uint256 length, uint256 maxLength);
    error UnsupportedDecimals(uint8 decimals);
    error PaymentShortfall(uint256 expected, uint256 received);

    constructor() Ownable(msg.sender) {}

    // -------------------------------------------------------------- modifiers

    modifier planExists(uint256 planId) {
        if (planId == 0 || planId >= nextPlanId) revert PlanNotFound(planId);
        _;
    }

    modifier subscriptionExists(uint256 subscriptionId) {
        if (subscriptionId == 0 || subscriptionId >= nextSubscriptionId) {
            revert SubscriptionNotFound(subscriptionId);
        }
        _;
    }

    // ---------------------------------------------------------- owner: setup

    /// @notice Set (or replace) the stablecoin accepted as payment method 1.
    /// @dev Replacing it does not move funds already held in the old token; withdraw those
    ///      with `withdrawFunds(oldToken, to)`.
    function setPrimaryStablecoin(address stablecoinAddress) external onlyOwner {
        if (stablecoinAddress == address(0) || stablecoinAddress.code.length == 0) revert InvalidAddress();
        uint8 decimals = IERC20Metadata(stablecoinAddress).decimals();
        if (decimals < MIN_STABLECOIN_DECIMALS || decimals > MAX_STABLECOIN_DECIMALS) revert UnsupportedDecimals(decimals);
        _stablecoin = PaymentMethod({
            tokenAddress: stablecoinAddress,
            pairAddress: address(0),
            stablecoinAddress: stablecoinAddress,
            tokenDecimals: decimals,
            stablecoinDecimals: decimals,
            active: true
        });
        emit PrimaryStablecoinSet(stablecoinAddress, decimals);
    }

    /// @notice Pause or resume sales through a payment method (only id 1 exists).
    function updatePaymentMethod(uint256 paymentMethodId, bool active) external onlyOwner {
        _requireKnownPaymentMethod(paymentMethodId);
        _stablecoin.active = active;
        emit PaymentMethodUpdated(paymentMethodId, active);
    }

    /// @notice Create a plan; ids are sequential from 1.
    function createPlan(string calldata name, uint256 pricePerDayUsdCents)
        external
        onlyOwner
        returns (uint256 planId)
    {
        if (pricePerDayUsdCents == 0) revert PlanPriceMustBePositive();
        planId = nextPlanId++;
        _plans[planId] = Plan({name: name, pricePerDayUsdCents: pricePerDayUsdCents, active: true});
        emit PlanCreated(planId, name, pricePerDayUsdCents);
    }

    /// @notice Rename, reprice or (de)activate a plan. Existing subscriptions keep their expiry;
    ///         an inactive plan accepts neither new subscriptions nor extensions.
    function updatePlan(uint256 planId, string calldata name, uint256 pricePerDayUsdCents, bool active)
        external
        onlyOwner
        planExists(planId)
    {
        if (pricePerDayUsdCents == 0) revert PlanPriceMustBePositive();
        _plans[planId] = Plan({name: name, pricePerDayUsdCents: pricePerDayUsdCents, active: active});
        emit PlanUpdated(planId, name, pricePerDayUsdCents, active);
    }

    // ------------------------------------------------------ owner: operations

    /// @notice End a subscription now (no refund). Its VM is then suspended and later destroyed.
    function cancelSubscription(uint256 subscriptionId) external onlyOwner subscriptionExists(subscriptionId) {
        Subscription storage sub = _subscriptions[subscriptionId];
        if (sub.cancelled) revert SubscriptionAlreadyCancelled(subscriptionId);
        sub.cancelled = true;
        sub.expiresAt = block.timestamp;
        emit SubscriptionCancelled(subscriptionId, sub.planId, sub.subscriber);
    }

    /// @notice Send this contract's whole balance of `tokenAddress` to `to`.
    function withdrawFunds(address tokenAddress, address to) external onlyOwner nonReentrant {
        if (to == address(0) || tokenAddress == address(0)) revert InvalidAddress();
        IERC20 token = IERC20(tokenAddress);
        uint256 balance = token.balanceOf(address(this));
        if (balance == 0) revert NoBalanceToWithdraw();
        token.safeTransfer(to, balance);
        emit FundsWithdrawn(tokenAddress, to, balance);
    }

    // --------------------------------------------------------------- buyers

    /// @notice Buy `days_` days of `planId`, paying with the primary stablecoin (approve first).
    /// @param userEncrypted opaque blob for the provisioning server (an ECIES-encrypted wallet
    ///        signature); at most `MAX_USER_ENCRYPTED_LENGTH` bytes.
    /// @return subscriptionId sequential from 1
    function buySubscription(uint256 planId, uint256 days_, uint256 paymentMethodId, bytes calldata userEncrypted)
        external
        nonReentrant
        planExists(planId)
        returns (uint256 subscriptionId)
    {
        if (!_plans[planId].active) revert PlanNotActive(planId);
        _checkDays(days_);
        if (userEncrypted.length > MAX_USER_ENCRYPTED_LENGTH) {
            revert UserEncryptedTooLarge(userEncrypted.length, MAX_USER_ENCRYPTED_LENGTH);
        }
        _requireUsablePaymentMethod(paymentMethodId);

        uint256 amount = _price(planId, days_);
        address token = _collect(amount);

        subscriptionId = nextSubscriptionId++;
        uint256 expiresAt = block.timestamp + days_ * 1 days;
        _subscriptions[subscriptionId] =
            Subscription({planId: planId, subscriber: msg.sender, cancelled: false, expiresAt: expiresAt});
        _subscriptionsBySubscriber[msg.sender].push(subscriptionId);

        emit SubscriptionCreated(subscriptionId, planId, msg.sender, expiresAt, amount, token, userEncrypted);
    }

    /// @notice Add `days_` days to a subscription; anyone may pay (gifting). The days are added to
    ///         the current expiry, or to now if it already lapsed.
    function extendSubscription(uint256 subscriptionId, uint256 days_, uint256 paymentMethodId)
        external
        nonReentrant
        subscriptionExists(subscriptionId)
    {
        Subscription storage sub = _subscriptions[subscriptionId];
        if (sub.cancelled) revert SubscriptionAlreadyCancelled(subscriptionId);
        uint256 planId = sub.planId;
        if (!_plans[planId].active) revert PlanNotActive(planId);
        _checkDays(days_);
        _requireUsablePaymentMethod(paymentMethodId);

        uint256 amount = _price(planId, days_);
        address token = _collect(amount);

        uint256 base = sub.expiresAt > block.timestamp ? sub.expiresAt : block.timestamp;
        uint256 newExpiresAt = base + days_ * 1 days;
        sub.expiresAt = newExpiresAt;

        emit SubscriptionExtended(subscriptionId, planId, msg.sender, newExpiresAt, amount, token);
    }

    // ---------------------------------------------------------------- views

    /// @notice Whole days left (0 when lapsed or cancelled).
    function daysRemaining(uint256 subscriptionId)
        external
        view
        subscriptionExists(subscriptionId)
        returns (uint256)
    {
        Subscription storage sub = _subscriptions[subscriptionId];
        if (sub.cancelled || sub.expiresAt <= block.timestamp) return 0;
        return (sub.expiresAt - block.timestamp) / 1 days;
    }

    function getSubscription(uint256 subscriptionId)
        external
        view
        subscriptionExists(subscriptionId)
        returns (uint256 planId, address subscriber, uint256 expiresAt, bool isActive, bool cancelled)
    {
        Subscription storage sub = _subscriptions[subscriptionId];
        return (sub.planId, sub.subscriber, sub.expiresAt, _isActive(sub), sub.cancelled);
    }

    function getPlan(uint256 planId)
        external
        view
        planExists(planId)
        returns (string memory name, uint256 pricePerDayUsdCents, bool active)
    {
        Plan storage plan = _plans[planId];
        return (plan.name, plan.pricePerDayUsdCents, plan.active);
    }

    /// @notice The primary stablecoin, or the zero address before `setPrimaryStablecoin`.
    function getPrimaryStablecoin() external view returns (address) {
        return _stablecoin.tokenAddress;
    }

    /// @notice `[1]` once the stablecoin is set, otherwise empty.
    function getPaymentMethodIds() external view returns (uint256[] memory ids) {
        if (_stablecoin.tokenAddress == address(0)) return new uint256[](0);
        ids = new uint256[](1);
        ids[0] = STABLECOIN_PAYMENT_ID;
    }

    function getPaymentMethod(uint256 paymentMethodId)
        external
        view
        returns (
            address tokenAddress,
            address pairAddress,
            address stablecoinAddress,
            uint8 tokenDecimals,
            uint8 stablecoinDecimals,
            bool active
        )
    {
        _requireKnownPaymentMethod(paymentMethodId);
        PaymentMethod storage pm = _stablecoin;
        return (
            pm.tokenAddress, pm.pairAddress, pm.stablecoinAddress, pm.tokenDecimals, pm.stablecoinDecimals, pm.active
        );
    }

    /// @notice Token base units `buySubscription` / `extendSubscription` would charge.
    function calculatePayment(uint256 planId, uint256 days_, uint256 paymentMethodId)
        external
        view
        planExists(planId)
        returns (uint256)
    {
        _requireKnownPaymentMethod(paymentMethodId);
        return _price(planId, days_);
    }

    function getTotalSubscriptionCount() external view returns (uint256) {
        return nextSubscriptionId - 1;
    }

    function getTotalPlanCount() external view returns (uint256) {
        return nextPlanId - 1;
    }

    /// @notice Ids of the subscriptions `subscriber` bought, oldest first (gifted extensions do
    ///         not transfer ownership, so they are not listed under the gifter).
    function getSubscriptionsBySubscriber(address subscriber) external view returns (uint256[] memory) {
        return _subscriptionsBySubscriber[subscriber];
    }

    /// @notice Not cancelled and not yet expired; false for unknown ids.
    function isSubscriptionActive(uint256 subscriptionId) external view returns (bool) {
        if (subscriptionId == 0 || subscriptionId >= nextSubscriptionId) return false;
        return _isActive(_subscriptions[subscriptionId]);
    }

    // ------------------------------------------------------------- internals

    function _isActive(Subscription storage sub) private view returns (bool) {
        return !sub.cancelled && sub.expiresAt > block.timestamp;
    }

    function _checkDays(uint256 days_) private pure {
        if (days_ == 0) revert DaysMustBePositive();
        if (days_ > MAX_DAYS) revert DaysTooLarge(days_, MAX_DAYS);
    }

    /// @dev Method 1 must exist and be configured (the error says which of the two is wrong).
    function _requireKnownPaymentMethod(uint256 paymentMethodId) private view {
        if (paymentMethodId != STABLECOIN_PAYMENT_ID) revert PaymentMethodNotFound(paymentMethodId);
        if (_stablecoin.tokenAddress == address(0)) revert PrimaryStablecoinNotSet();
    }

    function _requireUsablePaymentMethod(uint256 paymentMethodId) private view {
        _requireKnownPaymentMethod(paymentMethodId);
        if (!_stablecoin.active) revert PaymentMethodNotActive(paymentMethodId);
    }

    /// @dev cents * days * 10^decimals / 100; exact because decimals >= 2.
    function _price(uint256 planId, uint256 days_) private view returns (uint256) {
        return (_plans[planId].pricePerDayUsdCents * days_ * (10 ** uint256(_stablecoin.tokenDecimals))) / 100;
    }

    /// @dev Pull `amount` from the caller and insist that exactly that much arrived.
    function _collect(uint256 amount) private returns (address tokenAddress) {
        tokenAddress = _stablecoin.tokenAddress;
        IERC20 token = IERC20(tokenAddress);
        uint256 before = token.balanceOf(address(this));
        token.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = token.balanceOf(address(this)) - before;
        if (received != amount) revert PaymentShortfall(amount, received);
    }
}
