"""Parameter counts of the four models in closed form: the oracles ``num_params`` is tested
against (kept out of the package: the package counts the built model)."""

from __future__ import annotations


def _linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def frontend(num_embeddings, embedding_dim, factorized_dim=None) -> int:
    """The table and, when factorized, its bias-free projection."""
    return num_embeddings * embedding_dim + (
        embedding_dim * factorized_dim if factorized_dim else 0
    )


def bag(num_embeddings, embedding_dim, num_classes, hidden_dim=0, factorized_dim=None, **_):
    embedding = frontend(num_embeddings, embedding_dim, factorized_dim)
    width = factorized_dim or embedding_dim
    if hidden_dim > 0:
        head = _linear(width, hidden_dim) + _linear(hidden_dim, num_classes)
    else:
        head = _linear(width, num_classes)
    return {"total": embedding + head, "embedding": embedding}


def cnn(num_embeddings, embedding_dim, num_classes, kernel_sizes=(3, 4, 5), num_filters=100,
        factorized_dim=None, **_):  # fmt: skip
    embedding = frontend(num_embeddings, embedding_dim, factorized_dim)
    width = factorized_dim or embedding_dim
    convs = sum(width * k * num_filters + num_filters for k in kernel_sizes)
    head = _linear(num_filters * len(kernel_sizes), num_classes)
    return {"total": embedding + convs + head, "embedding": embedding}


def rnn(num_embeddings, embedding_dim, num_classes, cell="gru", hidden_size=128, num_layers=1,
        factorized_dim=None, **_):  # fmt: skip
    embedding = frontend(num_embeddings, embedding_dim, factorized_dim)
    gates = 3 if cell == "gru" else 4
    total, n_in = 0, factorized_dim or embedding_dim
    for _layer in range(num_layers):
        per_direction = gates * (hidden_size * n_in + hidden_size * hidden_size + 2 * hidden_size)
        total += 2 * per_direction
        n_in = 2 * hidden_size
    return {"total": embedding + total + _linear(2 * hidden_size, num_classes),
            "embedding": embedding}  # fmt: skip


def transformer(num_embeddings, embedding_dim, num_classes, num_layers=2, ff_dim=256,
                max_length=512, factorized_dim=None, **_):  # fmt: skip
    embedding = frontend(num_embeddings, embedding_dim, factorized_dim)
    d = factorized_dim or embedding_dim
    # attention (4 d x d maps + biases), feed-forward, two layer norms: per layer.
    per_layer = 4 * d * d + 4 * d + 2 * d * ff_dim + ff_dim + d + 4 * d
    body = max_length * d + num_layers * per_layer + 2 * d + _linear(d, num_classes)
    return {"total": embedding + body, "embedding": embedding}


BY_MODEL = {"bag": bag, "cnn": cnn, "rnn": rnn, "transformer": transformer}
