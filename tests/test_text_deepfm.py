"""DeepFM with user / item text fields (m6rec.models.text_deepfm): shapes, the text fields' role, learning from text."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torchmetrics.functional import auroc

from m6rec.models.factorization import pairwise_interactions
from m6rec.models.text_deepfm import TextDeepFM, entity_encodings

pytestmark = pytest.mark.usefixtures("one_thread")


def test_entity_encodings_are_indexed_by_raw_id(monkeypatch):
    monkeypatch.setattr(
        "m6rec.models.text_deepfm.cached_text_encodings",
        lambda texts, *a: torch.tensor([[float(len(t)), 1.0] for t in texts]),
    )
    table = pd.DataFrame({"item_id": [3, 1]})
    out = entity_encodings(table, "item_id", ["abc", "a"], "enc", None)
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [3.0, 1.0]]))


def _model(users: int = 4, items: int = 6, width: int = 3, seed: int = 0) -> TextDeepFM:
    torch.manual_seed(seed)
    return TextDeepFM(
        1 + users + items, [1, 1], torch.randn(users + 1, width), torch.randn(items + 1, width), embed_dim=4, hidden=[8]
    )


def test_text_fields_join_fm_pairs_and_mlp():
    model = _model().eval()
    features, users, items = torch.tensor([[1, 5], [2, 7]]), torch.tensor([1, 2]), torch.tensor([1, 3])
    assert model(features, users, items).shape == (2,)
    assert model.mlp[0].in_features == 4 * 4  # two ID fields + two text fields, 4 wide each
    # by hand: FM linear + text linear terms + pairs over the 4 slots + MLP over the 4 field vectors
    text = torch.stack([model.user_text(model.user_encodings[users]), model.item_text(model.item_encodings[items])], 1)
    slots = torch.cat([model.fm.embeddings(features), text[..., 1:]], 1)
    fm = model.fm.linear(features) + text[..., 0].sum(1) + pairwise_interactions(slots)
    deep = model.mlp(torch.cat([model.field_embeddings(features), text[..., 1:].flatten(1)], 1)).squeeze(-1)
    torch.testing.assert_close(model(features, users, items), fm + deep)
    with torch.no_grad():
        model.item_encodings[3] += 1.0
    assert not torch.allclose(model(features, users, items)[1], (fm + deep)[1])  # the item's text moves its score
    beyond = model(features, users, torch.tensor([1, 99]))  # an id without text reads a zero encoding
    with torch.no_grad():
        model.item_encodings.zero_()
    torch.testing.assert_close(beyond[1], model(features, users, torch.tensor([1, 99]))[1])


def test_learns_from_item_text_alone_and_scores_unseen_items():
    """Labels depend only on the item's text cluster; trained on items 1-20, it ranks items 21-40 (never seen, their
    ID embeddings untrained) by their text."""
    torch.manual_seed(0)
    cluster = torch.arange(41) % 2
    item_text = torch.randn(2, 8)[cluster] + 0.3 * torch.randn(41, 8)
    model = TextDeepFM(1 + 5 + 40, [1, 1], torch.randn(6, 8), item_text, embed_dim=4, hidden=[16], dropout=0.0)
    users = torch.randint(1, 6, (400,))

    def rows(item_ids):  # noqa: E306
        features = torch.stack([users[: len(item_ids)], 5 + item_ids], 1)
        return features, users[: len(item_ids)], item_ids, (cluster[item_ids] == 0).float()

    train, held_out = rows(torch.randint(1, 21, (400,))), rows(torch.randint(21, 41, (400,)))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(100):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(*train[:3]), train[3])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    model.eval()
    assert auroc(model(*held_out[:3]), held_out[3].long(), task="binary") > 0.95


def _neighbour_model(
    rows: torch.Tensor, item_text: torch.Tensor, k: int, similarity: str, **kwargs: float
) -> TextDeepFM:
    return TextDeepFM(
        1 + 3 + 4,
        [1, 1],
        torch.zeros(4, 2),
        item_text,
        embed_dim=2,
        hidden=[4],
        profiles=rows,
        neighbours=k,
        similarity=similarity,
        **kwargs,
    )


def test_linear_mode_is_lr_plus_each_text_fields_linear_term():
    """`linear=True`: the logit is LR's (bias + feature weights) plus the first output of each text field's projection;
    the FM embeddings and the MLP take no part."""
    generator = torch.Generator().manual_seed(0)
    item_text = torch.randn(5, 2, generator=generator)
    rows = torch.tensor([[1, 1, 1], [1, 2, 1], [1, 3, 0], [2, 4, 1], [2, 3, 0]])
    model = _neighbour_model(rows, item_text, 2, "text+cooccurrence", linear=True).eval()
    with torch.no_grad():
        model.fm.linear.weights.weight.normal_(generator=generator)  # LR starts at zero: make its part visible
        model.fm.linear.bias.fill_(0.3)
    features, users, items = torch.tensor([[1, 5], [2, 7], [3, 6]]), torch.tensor([1, 2, 1]), torch.tensor([4, 1, 2])
    fields = [model.user_text(model.user_encodings[users]), model.item_text(model.item_encodings[items])]
    fields += list(model.profile_text(model._profiles(users, items)).unbind(1))
    fields.append(model.neighbour_field(model._neighbour_similarities(users, items)))
    lr = 0.3 + model.fm.linear.weights.weight[features].sum((1, 2))
    by_hand = lr + sum(field[:, 0] for field in fields)
    torch.testing.assert_close(model(features, users, items), by_hand)
    assert model.fm.embeddings is None and model.mlp is None  # no FM pairs, no MLP, and no weights for them
    full = _neighbour_model(rows, item_text, 2, "text+cooccurrence").eval()
    missing, unexpected = full.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and {k.split(".")[0] for k in missing} == {"fm", "mlp"}
    assert not torch.allclose(full(features, users, items), by_hand)  # the default model has both
    torch.manual_seed(3)
    full, after_full = _neighbour_model(rows, item_text, 2, "text+cooccurrence"), torch.rand(3)
    torch.manual_seed(3)
    linear, after_linear = _neighbour_model(rows, item_text, 2, "text+cooccurrence", linear=True), torch.rand(3)
    kept = dict(full.named_parameters())  # the weights linear mode keeps start where the full model's do,
    assert all(torch.equal(p, kept[name]) for name, p in linear.named_parameters())
    assert torch.equal(after_linear, after_full)  # and the random stream goes on alike (batches, dropout)
    assert sum(p.numel() for p in linear.parameters()) < sum(p.numel() for p in full.parameters()) // 2


def test_profiles_are_mean_liked_and_disliked_encodings_without_the_rows_own_item():
    item_text = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [5.0, 5.0]])  # items 1-4
    rows = torch.tensor([[1, 1, 1], [1, 2, 1], [1, 3, 0], [2, 3, 1]])  # user, item, label (TRAIN rows)
    model = TextDeepFM(1 + 2 + 4, [1, 1], torch.zeros(3, 2), item_text, embed_dim=2, hidden=[4], profiles=rows)
    # pairs never in TRAIN: the whole TRAIN profile (user 1 liked items 1, 2 -> mean (0.5, 0.5); disliked item 3)
    expected = torch.tensor([[[2.0, 2.0], [0.5, 0.5]], [[0.0, 0.0], [2.0, 2.0]]])
    torch.testing.assert_close(model._profiles(torch.tensor([1, 2]), torch.tensor([4, 2])), expected)
    # TRAIN pairs, whatever the mode: (1, 1, liked) leaves item 1 out of the liked mean; (1, 3, disliked) empties the
    # disliked one (a validation row that repeats a TRAIN pair, as a sampled negative can, does not read its label)
    loo = model._profiles(torch.tensor([1, 1]), torch.tensor([1, 3]))
    torch.testing.assert_close(loo, torch.tensor([[[2.0, 2.0], [0.0, 1.0]], [[0.0, 0.0], [0.5, 0.5]]]))
    torch.testing.assert_close(
        model._own_rows(torch.tensor([1, 1, 2, 9]), torch.tensor([1, 3, 2, 99])),
        torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]),
    )
    assert model.mlp[0].in_features == 6 * 2
    model = _neighbour_model(rows, item_text, 2, "text+cooccurrence", dropout=0.0)
    features, users, items = torch.tensor([[1, 3], [1, 6], [2, 5]]), torch.tensor([1, 1, 2]), torch.tensor([1, 4, 2])
    torch.testing.assert_close(model.train()(features, users, items), model.eval()(features, users, items))


def test_profiles_are_the_same_bits_on_every_build():
    """80,000 training rows summed into profiles twice on 2 threads: bit-identical (index_put_'s accumulation order
    was not, so the same seed could build a different model)."""
    generator = torch.Generator().manual_seed(0)
    users, items = (
        torch.randint(1, 944, (80_000,), generator=generator),
        torch.randint(1, 1683, (80_000,), generator=generator),
    )
    rows = torch.stack([users, items, torch.randint(0, 2, (80_000,), generator=generator)], dim=1)
    item_text = torch.randn(1683, 384, generator=generator)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        built = [TextDeepFM(10, [1], torch.zeros(944, 2), item_text, profiles=rows) for _ in range(3)]
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(b.profile_sums, built[0].profile_sums) for b in built)
    liked = rows[:, 2] == 1
    by_hand = item_text[rows[liked & (rows[:, 0] == 7), 1]].double().sum(0)  # user 7's liked items, in float64
    assert torch.allclose(built[0].profile_sums[1, 7].double(), by_hand, atol=1e-4)


def test_id_dropout_empties_the_item_slot_in_training_only():
    torch.manual_seed(0)
    encodings = torch.randn(5, 3), torch.randn(7, 3)
    model = TextDeepFM(11, [1, 1], *encodings, embed_dim=4, hidden=[8], dropout=0.0, id_dropout=0.5)
    features = torch.stack([torch.randint(1, 5, (200,)), torch.randint(5, 11, (200,))], 1)
    users, items = features[:, 0], features[:, 1] - 4
    torch.manual_seed(1)
    drop = torch.rand(200, 1) < 0.5  # the draw forward makes first
    torch.manual_seed(1)
    trained = model.train()(features, users, items)
    emptied = features.clone()
    emptied[:, 1:] = emptied[:, 1:].masked_fill(drop, 0)  # feature id 0: an empty slot
    model.eval()
    assert 50 < int(drop.sum()) < 150
    torch.testing.assert_close(trained, model(emptied, users, items))
    assert not torch.allclose(model(features, users, items), model(emptied, users, items))  # eval keeps every ID
    with pytest.raises(ValueError, match="model.features.id_dropout"):
        TextDeepFM(11, [1, 1], *encodings, id_dropout=1.0)
    with pytest.raises(ValueError, match="model.features.id_dropout_below"):
        TextDeepFM(11, [1, 1], *encodings, id_dropout=0.1, id_dropout_below=20)  # no item counts to gate by
    with pytest.raises(ValueError, match="model.features.id_slots"):
        TextDeepFM(11, [1, 1], *encodings, id_dropout=0.1, id_slots=[2])


def test_id_dropout_below_empties_only_the_rare_items_slot():
    torch.manual_seed(0)
    encodings = torch.randn(5, 3), torch.randn(7, 3)
    counts = torch.tensor([0, 3, 50, 19, 20, 0])  # items 1, 3, 5 are rare (< 20); item 6 has no count (reads 0)
    model = TextDeepFM(
        11,
        [1, 1],
        *encodings,
        embed_dim=4,
        hidden=[8],
        dropout=0.0,
        id_dropout=0.5,
        item_counts=counts,
        id_dropout_below=20,
    )
    features = torch.stack([torch.randint(1, 5, (300,)), torch.randint(5, 11, (300,))], 1)
    users, items = features[:, 0], features[:, 1] - 4
    torch.manual_seed(1)
    rare = torch.isin(items, torch.tensor([1, 3, 5, 6])).unsqueeze(1)
    drop = (torch.rand(300, 1) < 0.5) & rare  # the same draw as plain id_dropout, kept on rare items only
    torch.manual_seed(1)
    trained = model.train()(features, users, items)
    emptied = features.clone()
    emptied[:, 1:] = emptied[:, 1:].masked_fill(drop, 0)
    assert 40 < int(drop.sum()) < int(rare.sum())
    torch.testing.assert_close(trained, model.eval()(emptied, users, items))


def test_text_neighbours_are_the_top_cosines_of_centred_encodings_by_hand():
    # items 1-4; the TRAIN items' mean is (1, 1), so the centred encodings of items 1..4 are (1,0) (0,1) (-1,0) (0,-1)
    item_text = torch.tensor([[9.0, 9.0], [2.0, 1.0], [1.0, 2.0], [0.0, 1.0], [1.0, 0.0]])
    rows = torch.tensor([[1, 1, 1], [1, 2, 1], [1, 3, 0], [2, 4, 1]])  # user 1 liked 1, 2, disliked 3; user 2 liked 4
    model = _neighbour_model(rows, item_text, 2, "text")
    sims = model._neighbour_similarities(torch.tensor([1, 1, 2, 3]), torch.tensor([4, 1, 1, 1]))
    # [disliked top-2, liked top-2], highest first; fewer than k -> 0; the row's own item never counts.
    # (1, 4): item 4 (0,-1) vs disliked 3 (-1,0): 0; vs liked 1 (1,0), 2 (0,1): 0, -1
    # (1, 1): vs disliked 3: -1; vs liked 2 (item 1 itself left out): 0.  (2, 1): vs liked 4: 0.  user 3: no rows
    expected = torch.tensor([[0.0, 0.0, 0.0, -1.0], [-1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(sims, expected)
    nearer = model._neighbour_similarities(torch.tensor([1]), torch.tensor([3]))  # item 3 vs liked 1, 2
    torch.testing.assert_close(nearer, torch.tensor([[0.0, 0.0, 0.0, -1.0]]))
    assert model.mlp[0].in_features == 7 * 2  # two IDs, four text fields, one neighbour field
    assert model(torch.tensor([[1, 5]]), torch.tensor([1]), torch.tensor([1])).shape == (1,)


def test_items_without_text_are_no_ones_content_neighbours():
    """An item without text (a zero encoding) has cosine 0 with every item, not the cosine 1 that two centred zero
    encodings (both -mean) would give each other."""
    item_text = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])  # items 3, 4: no text
    rows = torch.tensor([[1, 1, 1], [1, 3, 1], [2, 2, 1]])
    model = _neighbour_model(rows, item_text, 1, "text")
    sims = model._neighbour_similarities(torch.tensor([1]), torch.tensor([4]))  # textless 4 vs liked 1, textless 3
    torch.testing.assert_close(sims, torch.tensor([[0.0, 0.0]]))


def test_cooccurrence_neighbours_by_hand():
    # TRAIN user sets: item 1 {1, 2}, item 2 {1, 2, 3}, item 3 {3}
    rows = torch.tensor([[1, 1, 1], [2, 1, 0], [1, 2, 1], [2, 2, 1], [3, 2, 0], [3, 3, 1]])
    model = _neighbour_model(rows, torch.zeros(5, 2), 1, "cooccurrence")
    # a pair never in TRAIN (3, 1): user 3 disliked 2 (cos(1, 2) = 2 / sqrt(2 * 3)), liked 3 (0 shared users)
    sims = model._neighbour_similarities(torch.tensor([3]), torch.tensor([1]))
    torch.testing.assert_close(sims, torch.tensor([[2 / 6**0.5, 0.0]]))
    # a TRAIN pair (1, 1): user 1 taken out of item 1's set -> {2}; liked neighbour 2 {1, 2, 3}: 1 / sqrt(1 * 3)
    loo = model._neighbour_similarities(torch.tensor([1]), torch.tensor([1]))
    torch.testing.assert_close(loo, torch.tensor([[0.0, 1 / 3**0.5]]))


def test_neighbour_counts_are_the_users_train_counts_whatever_the_rows_label():
    rows = torch.tensor([[1, 1, 1], [2, 1, 0], [1, 2, 1], [2, 2, 1], [3, 2, 0], [3, 3, 1]])
    model = _neighbour_model(rows, torch.zeros(5, 2), 1, "cooccurrence", neighbour_counts=True)
    # user 3 has 1 disliked and 1 liked TRAIN row: its disliked row (3, 2), its liked row (3, 3) and a pair never in
    # TRAIN (3, 1) all read (log 2, log 2); leaving the row's own row out would give (0, log 2) / (log 2, 0), its label
    # user 1 (2 liked): (0, log 3); an unknown user: none
    sims = model._neighbour_similarities(torch.tensor([3, 3, 3, 1, 9]), torch.tensor([2, 3, 1, 1, 1]))
    log2, log3 = torch.tensor(2.0).log().item(), torch.tensor(3.0).log().item()
    counts = [[log2, log2], [log2, log2], [log2, log2], [0.0, log3], [0.0, 0.0]]
    torch.testing.assert_close(sims[:, 2:], torch.tensor(counts))
    torch.testing.assert_close(sims[2:4, :2], torch.tensor([[2 / 6**0.5, 0.0], [0.0, 1 / 3**0.5]]))
    assert model.neighbour_field[1].in_features == 4
    with pytest.raises(ValueError, match="model.features.neighbour_counts"):
        _neighbour_model(rows, torch.zeros(5, 2), 0, "cooccurrence", neighbour_counts=True)


def test_label_free_padding_shows_n_minus_1_neighbours_per_class_whatever_the_label():
    """A TRAIN row leaves its own item out of its label's class; without the option a short class (<= k items) then
    shows one fewer neighbour when the row has that label. With it, the other class drops its weakest shown neighbour,
    so both classes show min(n - 1, k) for either label; held-out rows and long classes are unchanged."""
    generator = torch.Generator().manual_seed(0)
    item_text = torch.randn(12, 4, generator=generator)  # generic encodings: no cosine is exactly 0
    # user 1: liked 1, 2 / disliked 3 (both classes short at k = 3); user 2: liked 4-8 (long) / disliked 9, 10
    rows = torch.tensor(
        [[1, 1, 1], [1, 2, 1], [1, 3, 0], [2, 4, 1], [2, 5, 1], [2, 6, 1], [2, 7, 1], [2, 8, 1], [2, 9, 0], [2, 10, 0]]
    )
    plain = _neighbour_model(rows, item_text, 3, "text")
    free = _neighbour_model(rows, item_text, 3, "text", label_free_padding=True)
    users, items = torch.cat([rows[:, 0], torch.tensor([1, 2])]), torch.cat([rows[:, 1], torch.tensor([11, 11])])
    before, after = plain._neighbour_similarities(users, items), free._neighbour_similarities(users, items)
    shown = lambda sims: (sims != 0).view(-1, 2, 3).sum(2).tolist()  # noqa: E731  (disliked, liked) per row
    assert shown(before) == [[1, 1], [1, 1], [0, 2]] + [[2, 3]] * 5 + [[1, 3]] * 2 + [[1, 2], [2, 3]]
    assert shown(after) == [[0, 1], [0, 1], [0, 1]] + [[1, 3]] * 5 + [[1, 3]] * 2 + [[1, 2], [2, 3]]
    dropped = before.clone()
    dropped[:2, 0] = 0.0  # user 1's liked rows: the one disliked neighbour goes
    dropped[2, 4] = 0.0  # its disliked row: the weaker of the two liked ones goes
    dropped[3:8, 1] = 0.0  # user 2's liked rows: the weaker of its two disliked (the liked class has > k: unchanged)
    torch.testing.assert_close(after, dropped)
    with pytest.raises(ValueError, match="model.features.label_free_padding"):
        _neighbour_model(rows, item_text, 0, "text", label_free_padding=True)


def test_cooccurrence_from_the_item_table_is_bit_identical_to_the_per_batch_matmul():
    """At the user's own TRAIN items (the neighbour candidates), the item × item table with the pair's own user
    subtracted gives the same bits as the cosine computed from the user sets each batch (integer counts are exact in
    float32); so does the neighbour field built from it."""
    generator = torch.Generator().manual_seed(0)
    pairs = torch.randperm(59 * 199, generator=generator)[:3000]  # distinct (user, item) pairs, users 1-59, items 1-199
    labels = torch.randint(0, 2, (3000,), generator=generator)
    rows = torch.stack([pairs // 199 + 1, pairs % 199 + 1, labels], dim=1)
    model = _neighbour_model(rows, torch.zeros(200, 2), 3, "cooccurrence")
    users, items = torch.cat([rows[:200, 0], torch.arange(1, 60)]), torch.cat([rows[:200, 1], torch.arange(59)])
    users_of = torch.zeros(200, 60)  # item × user, 1 = a TRAIN row
    users_of[rows[:, 1], rows[:, 0]] = 1.0
    assert torch.equal(model.item_sizes, users_of.sum(1))
    own = users_of[items].clone()
    own[torch.arange(len(items)), users] = 0.0
    by_matmul = (own @ users_of.T) / (own.sum(1, keepdim=True) * model.item_sizes).clamp(min=1).sqrt()
    theirs = users_of[:, users].T.bool()  # (batch, items): the user's TRAIN items
    assert theirs.sum() > 2000  # about 50 items per user
    assert torch.equal(model._similarities("cooccurrence", users, items)[0][theirs], by_matmul[theirs])
    candidates = model.rated[:, users].clone()
    candidates[:, torch.arange(len(items)), items] = False
    top = by_matmul.unsqueeze(0).masked_fill(~candidates, float("-inf")).topk(3, dim=2).values
    by_hand = torch.cat(list(top.masked_fill(top.isinf(), 0.0)), dim=1)  # (batch, 2k): [disliked, liked] top 3
    assert torch.equal(model._neighbour_similarities(users, items), by_hand)


@pytest.mark.parametrize("similarity", ["text", "cooccurrence"])
def test_a_training_rows_neighbours_equal_those_it_would_get_as_a_held_out_row(similarity):
    """Leave-one-out: a TRAIN row's features equal those the same row gets from a model built without it — no row
    sees itself, and training and test rows are built alike."""
    generator = torch.Generator().manual_seed(0)
    pairs = torch.randperm(3 * 4, generator=generator)[:9]
    rows = torch.stack([pairs // 4 + 1, pairs % 4 + 1, torch.randint(0, 2, (9,), generator=generator)], 1)
    item_text = torch.randn(5, 3, generator=generator)
    full = _neighbour_model(rows, item_text, 3, similarity)
    for index in range(len(rows)):
        user, item, _ = rows[index]
        without = _neighbour_model(torch.cat([rows[:index], rows[index + 1 :]]), item_text, 3, similarity)
        if similarity == "text":  # the centring mean moves when an item loses its only TRAIN row
            without.item_units = full.item_units
        trained = full._neighbour_similarities(user.view(1), item.view(1))
        held_out = without._neighbour_similarities(user.view(1), item.view(1))
        torch.testing.assert_close(trained, held_out)


def test_both_similarities_sit_side_by_side():
    generator = torch.Generator().manual_seed(1)
    rows = torch.tensor([[1, 1, 1], [1, 2, 0], [1, 3, 1], [2, 1, 1], [2, 4, 0], [3, 2, 1], [3, 4, 1]])
    item_text = torch.randn(5, 3, generator=generator)
    users, items = torch.tensor([1, 2, 3, 2]), torch.tensor([4, 1, 3, 3])  # TRAIN pairs and others
    both = _neighbour_model(rows, item_text, 2, "text+cooccurrence")
    singles = [
        _neighbour_model(rows, item_text, 2, kind)._neighbour_similarities(users, items)
        for kind in ("text", "cooccurrence")
    ]
    torch.testing.assert_close(both._neighbour_similarities(users, items), torch.cat(singles, dim=1))
    assert both.neighbour_field[1].in_features == 8


def test_text_neighbours_of_side_by_side_encoders_are_taken_in_each_part():
    """Encodings "a+b" (e.g. MPNet + random codes): one block of text neighbours per part, each equal to what a model
    over that part alone computes; co-occurrence follows once."""
    generator = torch.Generator().manual_seed(1)
    item_text = torch.randn(6, 5, generator=generator)
    rows = torch.tensor([[1, 1, 1], [1, 2, 0], [1, 3, 1], [2, 2, 1], [2, 4, 0], [3, 5, 1], [3, 1, 0]])
    both = _neighbour_model(rows, item_text, 2, "text+cooccurrence", text_parts=[3, 2])
    users, items = torch.tensor([1, 2, 3, 1]), torch.tensor([4, 1, 2, 1])
    blocks = [
        _neighbour_model(rows, item_text[:, :3], 2, "text")._neighbour_similarities(users, items),
        _neighbour_model(rows, item_text[:, 3:], 2, "text")._neighbour_similarities(users, items),
        _neighbour_model(rows, item_text, 2, "cooccurrence")._neighbour_similarities(users, items),
    ]
    torch.testing.assert_close(both._neighbour_similarities(users, items), torch.cat(blocks, dim=1))
    assert both.neighbour_field[1].in_features == 3 * 2 * 2
    with pytest.raises(ValueError, match="text_parts"):
        _neighbour_model(rows, item_text, 2, "text", text_parts=[3, 3])


def test_neighbours_need_profiles_and_a_known_similarity():
    encodings = torch.zeros(3, 2), torch.zeros(4, 2)
    with pytest.raises(ValueError, match="model.features.neighbours"):
        TextDeepFM(8, [1, 1], *encodings, neighbours=5)
    with pytest.raises(ValueError, match="model.features.similarity"):
        TextDeepFM(8, [1, 1], *encodings, profiles=torch.tensor([[1, 1, 1]]), neighbours=5, similarity="bm25")
    with pytest.raises(ValueError, match="model.features.similarity"):
        TextDeepFM(8, [1, 1], *encodings, profiles=torch.tensor([[1, 1, 1]]), neighbours=5, similarity="text+text")


def test_neighbour_tables_too_large_for_memory_are_refused_in_one_line_before_allocation():
    """1M users x 3,000 items: the `rated` table alone is 5.6 GiB (co-occurrence 11.2 GiB more), above 4 GiB."""
    rows = torch.tensor([[1, 1, 1], [999_999, 2, 0]])
    encodings = torch.zeros(3, 2), torch.zeros(3_000, 2)
    for similarity, gib in (("text", "5.6"), ("cooccurrence", "16.8")):
        expected = rf"model.features.neighbours: .* need {gib} GiB for 1,000,000 users x 3,000 items"
        with pytest.raises(ValueError, match=expected):
            TextDeepFM(8, [1, 1], *encodings, profiles=rows, neighbours=3, similarity=similarity)
