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
/// @dev `tokenURI` builds its JSON on-chain and escapes every string it embeds (except pages
///      found to be base64 when they were stored, which need no escaping), so the metadata
///      is valid JSON (and valid UTF-8) whatever the owner passed in:
///        - `"` and `\` get a backslash; \b \f \n \r \t use their short forms; every other byte
///          below 0x20 becomes \u00XX;
///        - `<`, `>` and `&` become \u003c, \u003e, \u0026, so the JSON can be inlined in an HTML
///          page without closing a <script> element;
///        - well-formed UTF-8 is copied unchanged;
///        - each ill-formed UTF-8 sequence (maximal subpart, as in Unicode 15 §3.9 and Python's
///          `bytes.decode("utf-8", "replace")`) becomes \ufffd, the replacement character.
///      A credential minted with an empty `animationUrlBase64` shows the contract's one default
///      page (set by the owner, stored once) with `#token=<id>&nft=<address>&chain=<chain id>`
///      appended, so the same page knows which token it renders; an empty default means no
///      `animation_url` at all. The default page is checked to be base64 text when it is stored,
///      so `tokenURI` copies it without escaping (escaping cost ~950 gas per byte on every call);
///      it is stored in chunks (`setDefaultAnimationPage` + `appendDefaultAnimationPage`) so a
///      page may be larger than one transaction can write.
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
    /// @dev The default page is `_pageChunks[0 .. _pageChunkCount)`, concatenated. Chunks past
    ///      the count are stale and get overwritten (cheaper than clearing them).
    string[] private _pageChunks;
    uint256 private _pageChunkCount;
    mapping(uint256 => Credential) private _credentials;
    /// @dev True when a token's own page is base64 (checked when it is stored, never refused):
    ///      tokenURI then copies it unescaped, as it does the default page.
    mapping(uint256 => bool) private _ownPageIsBase64;

    event CredentialMinted(uint256 indexed tokenId, address indexed recipient, uint256 issuedAt, uint256 expiresAt);
    event CredentialUpdated(uint256 indexed tokenId);
    event DefaultImageUriUpdated(string uri);
    /// @dev The page itself is not logged (it can be kilobytes); its hash identifies it.
    event DefaultAnimationPageUpdated(bytes32 indexed pageHash, uint256 length);

    /// @notice A default page (or chunk) holds a byte other than A-Z a-z 0-9 + / = at `offset`.
    error PageNotBase64(uint256 offset);
    /// @notice `appendDefaultAnimationPage` was given an empty chunk.
    error EmptyPageChunk();

    bytes16 private constant _HEX = "0123456789abcdef";
    /// @dev Bit c is set for each byte c of the base64 alphabet (A-Z a-z 0-9 + / and the pad =).
    uint256 private constant _BASE64_BYTES = 0x7fffffe07fffffe23ff880000000000;
    uint256 private constant _VALID = type(uint256).max;

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
        if (bytes(animationUrlBase64).length > 0 && _firstNonBase64(animationUrlBase64) == _VALID) {
            _ownPageIsBase64[tokenId] = true;
        }
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
        bool isBase64 = _firstNonBase64(animationUrlBase64) == _VALID;
        if (_ownPageIsBase64[tokenId] != isBase64) _ownPageIsBase64[tokenId] = isBase64;
        _updated(tokenId);
    }

    /// @notice Image for credentials minted without their own `imageUri`.
    function setDefaultImageUri(string calldata uri) external onlyOwner {
        _defaultImageUri = uri;
        emit DefaultImageUriUpdated(uri);
        if (_nextTokenId > 0) emit BatchMetadataUpdate(0, _nextTokenId - 1);
    }

    /// @notice The base64 HTML page for credentials minted without their own page; "" turns
    ///         it off. Stored once here instead of in every mint. A page too large for one
    ///         transaction is set in parts: its first part here, the rest appended in order.
    function setDefaultAnimationPage(string calldata base64Html) external onlyOwner {
        _requireBase64(base64Html);
        _pageChunkCount = 0;
        if (bytes(base64Html).length > 0) _storeChunk(base64Html);
        emit DefaultAnimationPageUpdated(keccak256(bytes(base64Html)), bytes(base64Html).length);
        if (_nextTokenId > 0) emit BatchMetadataUpdate(0, _nextTokenId - 1);
    }

    /// @notice Add `base64Chunk` to the end of the default page; the event carries the hash and
    ///         length of the whole page so far, so the last one names the finished page.
    function appendDefaultAnimationPage(string calldata base64Chunk) external onlyOwner {
        if (bytes(base64Chunk).length == 0) revert EmptyPageChunk();
        _requireBase64(base64Chunk);
        _storeChunk(base64Chunk);
        bytes memory page = _assembledPage();
        emit DefaultAnimationPageUpdated(keccak256(page), page.length);
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

    function defaultAnimationPage() external view returns (string memory) {
        return string(_assembledPage());
    }

    /// @notice How many parts the default page was stored in (0: no page).
    function defaultAnimationPageChunks() external view returns (uint256) {
        return _pageChunkCount;
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
            '"',
            _animationUrl(tokenId, c),
            ","
        );
    }

    /// @dev `,"animation_url":"…"` for the token's own page, else for the default page with the
    ///      fragment that names the token (`&` written as \u0026, like every embedded `&`), else
    ///      nothing.
    function _animationUrl(uint256 tokenId, Credential storage c) private view returns (bytes memory) {
        if (bytes(c.animationUrlBase64).length > 0) {
            bytes memory own = bytes(c.animationUrlBase64);
            if (!_ownPageIsBase64[tokenId]) own = _escapeJson(own);
            return bytes.concat(',"animation_url":"data:text/html;base64,', own, '"');
        }
        if (_pageChunkCount == 0) return "";
        return bytes.concat(
            ',"animation_url":"data:text/html;base64,',
            _assembledPage(), // base64 only (checked when stored): nothing to escape
            "#token=",
            bytes(Strings.toString(tokenId)),
            "\\u0026nft=",
            bytes(Strings.toHexString(address(this))),
            "\\u0026chain=",
            bytes(Strings.toString(block.chainid)),
            '"'
        );
    }

    function _storeChunk(string calldata chunk) private {
        uint256 index = _pageChunkCount;
        if (index < _pageChunks.length) _pageChunks[index] = chunk;
        else _pageChunks.push(chunk);
        _pageChunkCount = index + 1;
    }

    function _assembledPage() private view returns (bytes memory page) {
        uint256 count = _pageChunkCount;
        if (count == 1) return bytes(_pageChunks[0]);
        for (uint256 i = 0; i < count; ++i) {
            page = bytes.concat(page, bytes(_pageChunks[i]));
        }
    }

    /// @dev Reverts with the offset of the first byte outside the base64 alphabet.
    function _requireBase64(string calldata text) private pure {
        uint256 bad = _firstNonBase64(text);
        if (bad != _VALID) revert PageNotBase64(bad);
    }

    /// @dev The offset of the first byte outside the base64 alphabet, `_VALID` when there is none.
    ///      Whole 32-byte words are checked without branches (about a third of the gas of a byte
    ///      loop); the byte loop runs for the tail, and to find the offset once a word failed.
    function _firstNonBase64(string calldata text) private pure returns (uint256 bad) {
        uint256 ok = 1;
        bad = _VALID;
        assembly ("memory-safe") {
            let start := text.offset
            let words := add(start, and(text.length, not(31)))
            for { let p := start } lt(p, words) { p := add(p, 32) } {
                let w := calldataload(p)
                ok := and(ok, shr(byte(0, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(1, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(2, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(3, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(4, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(5, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(6, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(7, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(8, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(9, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(10, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(11, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(12, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(13, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(14, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(15, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(16, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(17, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(18, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(19, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(20, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(21, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(22, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(23, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(24, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(25, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(26, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(27, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(28, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(29, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(30, w), _BASE64_BYTES))
                ok := and(ok, shr(byte(31, w), _BASE64_BYTES))
            }
            let from := start // a word failed: find the offset from the start
            if and(ok, 1) { from := words }
            let end := add(start, text.length)
            for { let p := from } lt(p, end) { p := add(p, 1) } {
                if iszero(and(shr(byte(0, calldataload(p)), _BASE64_BYTES), 1)) {
                    bad := sub(p, start)
                    break
                }
            }
        }
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
