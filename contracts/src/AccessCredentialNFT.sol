// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {ERC721Enumerable} from "@openzeppelin/contracts/token/ERC721/extensions/ERC721Enumerable.sol";
import {IERC4906} from "@openzeppelin/contracts/interfaces/IERC4906.sol";
import {IERC165} from "@openzeppelin/contracts/utils/introspection/IERC165.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Base64} from "@openzeppelin/contracts/utils/Base64.sol";
import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";

/// @title AccessCredentialNFT
/// @notice One token per provisioned VM. It carries the VM's connection details encrypted for the
///         subscriber's wallet (`userEncrypted`), the message the wallet signed (`publicSecret`),
///         and an expiry the VM's PAM module can check on-chain.
/// @dev `tokenURI` builds its JSON on-chain and escapes every string it embeds, so the metadata
///      is valid JSON (and valid UTF-8) whatever the owner passed in:
///        - `"` and `\` get a backslash; \b \f \n \r \t use their short forms; every other byte
///          below 0x20 becomes \u00XX;
///        - `<`, `>` and `&` become \u003c, \u003e, \u0026, so the JSON can be inlined in an HTML
///          page without closing a <script> element;
///        - well-formed UTF-8 is copied unchanged;
///        - each ill-formed UTF-8 sequence (maximal subpart, as in Unicode 15 §3.9 and Python's
///          `bytes.decode("utf-8", "replace")`) becomes \ufffd, the replacement character.
///      Tokens are minted with `_mint`, not `_safeMint`: a subscriber's contract wallet must not
///      be able to block (or re-enter) the operator's mint by rejecting the callback.
contract AccessCredentialNFT is ERC721Enumerable, Ownable, IERC4906 {
    struct Credential {
        bytes userEncrypted;
        string publicSecret;
        string description;
        string imageUri;
        string animationUrlBase64;
        uint256 issuedAt;
        uint256 expiresAt;
    }

    uint256 private _nextTokenId;
    string private _defaultImageUri;
    mapping(uint256 => Credential) private _credentials;

    event CredentialMinted(uint256 indexed tokenId, address indexed recipient, uint256 issuedAt, uint256 expiresAt);
    event CredentialUpdated(uint256 indexed tokenId);
    event DefaultImageUriUpdated(string uri);

    bytes16 private constant _HEX = "0123456789abcdef";

    constructor(string memory name_, string memory symbol_, string memory defaultImageUri_)
        ERC721(name_, symbol_)
        Ownable(msg.sender)
    {
        _defaultImageUri = defaultImageUri_;
    }

    // ---------------------------------------------------------------- owner

    /// @notice Mint the next credential (ids are sequential from 0) to `to`.
    /// @param expiresAt unix time after which the credential is void; 0 for "never".
    function mint(
        address to,
        bytes calldata userEncrypted,
        string calldata publicSecret,
        string calldata description,
        string calldata imageUri,
        string calldata animationUrlBase64,
        uint256 expiresAt
    ) external onlyOwner returns (uint256 tokenId) {
        tokenId = _nextTokenId++;
        _mint(to, tokenId);
        Credential storage c = _credentials[tokenId];
        c.userEncrypted = userEncrypted;
        c.publicSecret = publicSecret;
        c.description = description;
        c.imageUri = imageUri;
        c.animationUrlBase64 = animationUrlBase64;
        c.issuedAt = block.timestamp;
        c.expiresAt = expiresAt;
        emit CredentialMinted(tokenId, to, block.timestamp, expiresAt);
    }

    /// @notice Replace the encrypted connection details (e.g. after a VM was rebuilt).
    function updateUserEncrypted(uint256 tokenId, bytes calldata userEncrypted) external onlyOwner {
        _requireOwned(tokenId);
        _credentials[tokenId].userEncrypted = userEncrypted;
        _updated(tokenId);
    }

    /// @notice Move the expiry (renewals); 0 means "never expires".
    function updateExpiration(uint256 tokenId, uint256 expiresAt) external onlyOwner {
        _requireOwned(tokenId);
        _credentials[tokenId].expiresAt = expiresAt;
        _updated(tokenId);
    }

    function updateAnimationUrl(uint256 tokenId, string calldata animationUrlBase64) external onlyOwner {
        _requireOwned(tokenId);
        _credentials[tokenId].animationUrlBase64 = animationUrlBase64;
        _updated(tokenId);
    }

    /// @notice Image for credentials minted without their own `imageUri`.
    function setDefaultImageUri(string calldata uri) external onlyOwner {
        _defaultImageUri = uri;
        emit DefaultImageUriUpdated(uri);
        if (_nextTokenId > 0) emit BatchMetadataUpdate(0, _nextTokenId - 1);
    }

    // ---------------------------------------------------------------- views

    function getAccessData(uint256 tokenId)
        external
        view
        returns (bytes memory userEncrypted, string memory publicSecret, uint256 issuedAt, uint256 expiresAt)
    {
        _requireOwned(tokenId);
        Credential storage c = _credentials[tokenId];
        return (c.userEncrypted, c.publicSecret, c.issuedAt, c.expiresAt);
    }

    /// @notice True from `expiresAt` on (the same instant the subscription stops being active);
    ///         never for `expiresAt == 0`.
    function isExpired(uint256 tokenId) external view returns (bool) {
        _requireOwned(tokenId);
        uint256 expiresAt = _credentials[tokenId].expiresAt;
        return expiresAt != 0 && block.timestamp >= expiresAt;
    }

    function defaultImageUri() external view returns (string memory) {
        return _defaultImageUri;
    }

    /// @notice `data:application/json;base64,` + the metadata JSON (see the contract notes).
    function tokenURI(uint256 tokenId) public view override returns (string memory) {
        _requireOwned(tokenId);
        Credential storage c = _credentials[tokenId];
        bytes memory json = bytes.concat(_head(tokenId, c), _tail(c));
        return string.concat("data:application/json;base64,", Base64.encode(json));
    }

    function supportsInterface(bytes4 interfaceId)
        public
        view
        override(ERC721Enumerable, IERC165)
        returns (bool)
    {
        return interfaceId == bytes4(0x49064906) || super.supportsInterface(interfaceId);
    }

    // ------------------------------------------------------------ internals

    function _updated(uint256 tokenId) private {
        emit CredentialUpdated(tokenId);
        emit MetadataUpdate(tokenId);
    }

    function _head(uint256 tokenId, Credential storage c) private view returns (bytes memory) {
        string memory image = bytes(c.imageUri).length > 0 ? c.imageUri : _defaultImageUri;
        return bytes.concat(
            '{"name":"Access Credential #',
            bytes(Strings.toString(tokenId)),
            '","description":"',
            _escapeJson(bytes(c.description)),
            '","image":"',
            _escapeJson(bytes(image)),
            '","animation_url":"data:text/html;base64,',
            _escapeJson(bytes(c.animationUrlBase64)),
            '",'
        );
    }

    function _tail(Credential storage c) private view returns (bytes memory) {
        bytes memory attributes = bytes.concat(
            '"attributes":[{"trait_type":"Type","value":"Server Access"},'
            '{"trait_type":"Issued","display_type":"date","value":',
            bytes(Strings.toString(c.issuedAt)),
            "}"
        );
        if (c.expiresAt > 0) {
            attributes = bytes.concat(
                attributes,
                ',{"trait_type":"Expires","display_type":"date","value":',
                bytes(Strings.toString(c.expiresAt)),
                "}"
            );
        }
        return bytes.concat(
            attributes,
            '],"access":{"user_encrypted":"0x',
            _toHex(c.userEncrypted),
            '","public_secret":"',
            _escapeJson(bytes(c.publicSecret)),
            '"}}'
        );
    }

    /// @dev Lowercase hex of `data`, without a prefix.
    function _toHex(bytes memory data) private pure returns (bytes memory out) {
        out = new bytes(data.length * 2);
        for (uint256 i = 0; i < data.length; ++i) {
            uint8 b = uint8(data[i]);
            out[2 * i] = _HEX[b >> 4];
            out[2 * i + 1] = _HEX[b & 0x0f];
        }
    }

    /// @dev The body of a JSON string literal holding `input` (see the contract notes).
    function _escapeJson(bytes memory input) private pure returns (bytes memory out) {
        uint256 len = input.length;
        // Worst case is six output bytes per input byte (\u00XX or \ufffd).
        out = new bytes(len * 6);
        uint256 o = 0;
        uint256 i = 0;
        while (i < len) {
            uint8 c = uint8(input[i]);
            if (c < 0x80) {
                o = _escapeAscii(out, o, c);
                ++i;
                continue;
            }
            (uint256 need, uint8 lo, uint8 hi) = _utf8Lead(c);
            uint256 j = i + 1;
            uint256 got = 0;
            while (got < need && j < len) {
                uint8 b = uint8(input[j]);
                // Only the first continuation byte has a lead-specific range.
                if (got == 0 ? (b < lo || b > hi) : (b < 0x80 || b > 0xbf)) break;
                ++got;
                ++j;
            }
            if (need > 0 && got == need) {
                for (uint256 k = i; k < j; ++k) {
                    out[o++] = input[k];
                }
            } else {
                o = _writeUnicodeEscape(out, o, 0xfffd);
            }
            i = j;
        }
        assembly ("memory-safe") {
            mstore(out, o) // shrink to the bytes written; the tail stays allocated, unused
        }
    }

    /// @dev For a UTF-8 lead byte: how many continuation bytes follow and the allowed range of the
    ///      first one (which excludes overlongs, surrogates and code points above U+10FFFF).
    ///      `need == 0` marks a byte that can never start a sequence.
    function _utf8Lead(uint8 c) private pure returns (uint256 need, uint8 lo, uint8 hi) {
        if (c >= 0xc2 && c <= 0xdf) return (1, 0x80, 0xbf);
        if (c == 0xe0) return (2, 0xa0, 0xbf);
        if (c == 0xed) return (2, 0x80, 0x9f);
        if (c >= 0xe1 && c <= 0xef) return (2, 0x80, 0xbf);
        if (c == 0xf0) return (3, 0x90, 0xbf);
        if (c >= 0xf1 && c <= 0xf3) return (3, 0x80, 0xbf);
        if (c == 0xf4) return (3, 0x80, 0x8f);
        return (0, 0, 0);
    }

    function _escapeAscii(bytes memory out, uint256 o, uint8 c) private pure returns (uint256) {
        bytes1 short;
        if (c == 0x22) short = '"';
        else if (c == 0x5c) short = "\\";
        else if (c == 0x08) short = "b";
        else if (c == 0x0c) short = "f";
        else if (c == 0x0a) short = "n";
        else if (c == 0x0d) short = "r";
        else if (c == 0x09) short = "t";
        if (short != 0) {
            out[o] = "\\";
            out[o + 1] = short;
            return o + 2;
        }
        if (c < 0x20 || c == 0x3c || c == 0x3e || c == 0x26) return _writeUnicodeEscape(out, o, c);
        out[o] = bytes1(c);
        return o + 1;
    }

    function _writeUnicodeEscape(bytes memory out, uint256 o, uint16 codeUnit) private pure returns (uint256) {
        out[o] = "\\";
        out[o + 1] = "u";
        out[o + 2] = _HEX[(codeUnit >> 12) & 0x0f];
        out[o + 3] = _HEX[(codeUnit >> 8) & 0x0f];
        out[o + 4] = _HEX[(codeUnit >> 4) & 0x0f];
        out[o + 5] = _HEX[codeUnit & 0x0f];
        return o + 6;
    }
}
