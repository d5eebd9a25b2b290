// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title MockStablecoin
/// @notice A stand-in for USDC and friends on local chains: the tests and `blockhost demo` use it.
/// @dev FOR TESTS AND DEMOS ONLY. `mint` is open to everyone, so the token has no value; never
///      configure it as the payment token of a real deployment.
contract MockStablecoin is ERC20 {
    uint8 private immutable _decimals;

    constructor(string memory name_, string memory symbol_, uint8 decimals_) ERC20(name_, symbol_) {
        _decimals = decimals_;
    }

    function decimals() public view override returns (uint8) {
        return _decimals;
    }

    /// @notice Create `amount` base units for `to`. Anyone may call it (test/demo faucet).
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}
