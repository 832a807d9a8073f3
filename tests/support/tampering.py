"""Links a stranger has altered, for tests that check altered links are refused."""


def tampered(token: str) -> str:
    """The token with one character of its signature changed, always to a different one.

    The change is in the middle of the signature: its last character carries padding bits that
    decoding ignores, and replacing the tail with fixed characters leaves the token unchanged
    whenever it already ended with them (a test that fails about one run in a thousand).
    """
    head, dot, signature = token.rpartition(".")
    if not signature:
        raise ValueError("not a signed token")
    middle = len(signature) // 2
    replacement = "A" if signature[middle] != "A" else "B"
    return f"{head}{dot}{signature[:middle]}{replacement}{signature[middle + 1:]}"
