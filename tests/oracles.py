"""Independent reference implementations that tests compare mmr1kit against (never imported by mmr1kit)."""


def levenshtein(a: str, b: str) -> int:
    """Character edit distance (insert, delete, substitute, each cost 1): the textbook dynamic programme, written
    independently of rapidfuzz, which the OCR rewards and metrics use."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]
