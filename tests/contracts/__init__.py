"""The Solidity contracts, their artifacts and their deployment."""
