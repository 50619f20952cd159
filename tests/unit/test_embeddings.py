import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmlab import embeddings as E


def random_batch(seed=0, batch=5, k=4, dim=7):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, dim, generator=g), torch.randn(batch, dim, generator=g),
            torch.randn(batch, k, dim, generator=g))


def test_sgns_loss_is_binary_cross_entropy_on_one_real_and_k_noise_neighbours():
    center, context, negatives = random_batch()
    logits = torch.cat([(center * context).sum(-1, keepdim=True), torch.einsum("bd,bkd->bk", center, negatives)], 1)
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1
    reference = F.binary_cross_entropy_with_logits(logits, labels, reduction="sum") / len(center)
    assert torch.allclose(E.sgns_loss(center, context, negatives), reference, atol=1e-6)


def test_sgns_loss_on_a_hand_checkable_case():
    # v_c = u_o = (1, 0): -log σ(1); one noise word u_k = (0, 1) orthogonal: -log σ(0) = log 2.
    loss = E.sgns_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[[0.0, 1.0]]]))
    expected = -np.log(1 / (1 + np.exp(-1.0))) + np.log(2)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_hand_derived_gradients_equal_autograd():
    tensors = [t.double().requires_grad_(True) for t in random_batch(seed=3)]
    E.sgns_loss(*tensors).backward()
    mine = E.sgns_gradients(*[t.detach() for t in tensors])
    for by_hand, leaf in zip(mine, tensors):
        assert torch.allclose(by_hand, leaf.grad, atol=1e-12)


def test_model_gradients_match_hand_derivation_through_embedding_lookups():
    # Repeated ids accumulate into the same embedding row: the model's .grad must be the scatter-sum.
    torch.manual_seed(0)
    model = E.SkipGram(6, 6, 4)
    torch.nn.init.normal_(model.context.weight)
    centers, contexts, negatives = torch.tensor([0, 1, 1]), torch.tensor([2, 3, 2]), torch.tensor([[4, 5], [4, 4], [0, 5]])
    model(centers, contexts, negatives).backward()
    d_c, d_o, d_k = E.sgns_gradients(model.center(centers).detach(), model.context(contexts).detach(),
                                     model.context(negatives).detach())
    expected_center = torch.zeros(6, 4).index_add_(0, centers, d_c)
    expected_context = torch.zeros(6, 4).index_add_(0, contexts, d_o).index_add_(0, negatives.flatten(), d_k.reshape(-1, 4))
    assert torch.allclose(model.center.weight.grad, expected_center, atol=1e-6)
    assert torch.allclose(model.context.weight.grad, expected_context, atol=1e-6)


def test_keep_probability_follows_word2vec_and_never_drops_rare_words():
    counts = np.array([1_000_000, 10_000, 10])
    keep = E.keep_probability(counts, 1e-3)
    f = counts / counts.sum()
    assert keep[0] == pytest.approx((np.sqrt(f[0] / 1e-3) + 1) * 1e-3 / f[0])
    assert keep[0] < keep[1] <= keep[2] == 1.0


def test_noise_is_unigram_to_the_three_quarters_and_sampling_follows_it():
    counts = np.array([81, 16, 1])
    noise = E.noise_distribution(counts)
    expected = np.array([27, 8, 1]) / 36  # 81^0.75 = 27, 16^0.75 = 8
    assert np.allclose(noise.numpy(), expected, atol=1e-6)
    draws = E.sample_noise(noise, (200_000,), torch.Generator().manual_seed(0))
    assert np.allclose(np.bincount(draws.numpy(), minlength=3) / 200_000, expected, atol=0.005)


def test_skipgram_pairs_stay_within_the_window_and_the_document():
    ids = torch.arange(10)  # id == position, so a pair's distance is |center - context|
    docs = torch.tensor([0] * 6 + [1] * 4)
    centers, contexts = E.skipgram_pairs(ids, docs, window=2, generator=torch.Generator().manual_seed(0))
    assert len(centers) > 0
    assert ((centers - contexts).abs() <= 2).all() and (centers != contexts).all()
    assert (docs[centers] == docs[contexts]).all()
    # every position is a center of a pair at distance 1 when it has a neighbour in its document
    assert set(centers.tolist()) == set(range(10))


def test_pairs_with_full_window_are_all_pairs():
    ids, docs = torch.arange(5), torch.zeros(5, dtype=torch.long)
    centers, contexts = E.skipgram_pairs(ids, docs, window=1, generator=torch.Generator().manual_seed(0))
    assert sorted(zip(centers.tolist(), contexts.tolist())) == sorted(
        [(i, i + 1) for i in range(4)] + [(i + 1, i) for i in range(4)])


def test_unknown_word_gives_close_matches():
    vectors = E.WordVectors(["king", "kings", "queen"], torch.eye(3))
    with pytest.raises(KeyError) as error:
        vectors.neighbours("kng")
    assert "unknown word 'kng'; close matches: king" in error.value.args[0]


def test_analogy_and_expression_on_hand_made_vectors():
    # axes: royalty, gender (+ female), plus a "person" axis shared by all
    words = ["king", "queen", "man", "woman", "apple"]
    vectors = torch.tensor([[1.0, -1, 1], [1, 1, 1], [0, -1, 1], [0, 1, 1], [0, 0, -1]])
    wv = E.WordVectors(words, vectors)
    assert wv.analogy("man", "king", "woman", k=1)[0][0] == "queen"
    assert E.parse_expression("King - man + woman") == (["king", "woman"], ["man"])
    assert "queen" in E.explore(wv, "king - man + woman").splitlines()[1]
    with pytest.raises(ValueError):
        E.parse_expression("  - + ")
    results = E.evaluate_analogies(wv, [("man", "king", "woman", "queen"), ("man", "king", "woman", "zebra")])
    assert results[0].correct and results[0].rank == 1 and results[1].answer is None
    assert E.analogy_accuracy(results) == 0.5


def test_similarity_margin_uses_related_pairs_and_seeded_random_pairs():
    words = ["a", "b", "c", "d"]
    wv = E.WordVectors(words, torch.tensor([[1.0, 0], [1, 0.1], [0, 1], [-1, 0]]))
    m1 = E.similarity_margin(wv, [("a", "b"), ("a", "zzz")], n_random=50, seed=1)
    m2 = E.similarity_margin(wv, [("a", "b")], n_random=50, seed=1)
    assert m1.n_related == 1 and m1.related == pytest.approx(float(F.cosine_similarity(
        torch.tensor([1.0, 0]), torch.tensor([1, 0.1]), dim=0)))
    assert m1.random_scores == m2.random_scores and m1.margin == pytest.approx(m1.related - m1.random)


def test_word2vec_on_real_text_puts_related_pairs_above_random_pairs(cache_dir):
    # A small but real run: a quarter of the course corpora, three epochs, 50 dimensions (a few seconds).
    documents = E.course_documents(fraction=0.25)
    config = E.Word2VecConfig(dim=50, epochs=3, batch_size=1024, lr=0.01, min_count=5)
    vectors, vocab, history, _ = E.train_word2vec(documents, config)
    margin = E.similarity_margin(vectors)
    assert margin.n_related >= 25
    print(f"margin {margin.margin:.3f} (related {margin.related:.3f}, random {margin.random:.3f})")
    assert margin.margin > 0.2, margin
    assert history[-1][1] < history[0][1]  # the loss went down


def test_word2vec_artifact_is_cached_and_reloads_identically(cache_dir):
    config = E.Word2VecConfig(dim=16, epochs=1, corpus_fraction=0.05)
    first = E.word2vec(config)
    again = E.word2vec(config)
    assert torch.equal(first.vectors.unit, again.vectors.unit) and first.vocab.words == again.vocab.words
    assert again.history == first.history


def test_doc2vec_puts_speeches_near_speeches_of_their_era():
    speeches = E.corpora.speeches()
    documents = E.course_documents(fraction=1.0)
    vocab = E.build_vocabulary([d for d in documents if d.source == "speeches"], min_count=5)
    vectors, history = E.train_doc2vec([s.text for s in speeches], vocab, E.Doc2VecConfig(epochs=3, dim=32))
    gaps, all_gaps = E.nearest_neighbour_gaps(vectors, [s.year for s in speeches])
    assert np.median(gaps) < np.median(all_gaps) / 2


def test_checker_accepts_the_right_gradient_and_explains_wrong_ones(capsys):
    def not_done(center, context, negatives):
        raise NotImplementedError

    def right(center, context, negatives):
        return E.sgns_gradients(center, context, negatives)[0]

    def forgot_the_mean(center, context, negatives):
        return right(center, context, negatives) * len(center)

    assert E.check_center_gradient(not_done) is False and "Hint" in capsys.readouterr().out
    assert E.check_center_gradient(right) is True and "✓" in capsys.readouterr().out
    assert E.check_center_gradient(forgot_the_mean) is False and "scaled by 4.00" in capsys.readouterr().out
