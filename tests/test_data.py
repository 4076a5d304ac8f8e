"""The tf.data input pipeline: sampler and filter against their closed forms, no target leakage,
static shapes, determinism, tf.distribute, eval mode, colorization targets and bad records."""

import json
import os
import shutil

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from dct_gen import data, records
from dct_gen import representation as rep
from dct_gen.representation import DCTConfig

CHUNK, OVERLAP = 64, 16
WINDOW = CHUNK + OVERLAP


def _config(ordering: str) -> DCTConfig:
    return DCTConfig(block_size=8, quality=75, resolution=64, ordering=ordering)


@pytest.fixture(scope="module")
def dataset_dir(make_dataset):
    return make_dataset(_config("interleaved"), {"train": (16, 0)})


@pytest.fixture(scope="module")
def luma_first_dir(make_dataset):
    return make_dataset(_config("luma_first"), {"train": (16, 0)})


def _sequences(data_dir: str) -> dict[int, dict]:
    """length (stop included) -> the record's triples, read with the public parser."""
    out = {}
    for path in records.split_files(data_dir, "train"):
        for raw in tf.data.TFRecordDataset(path):
            f = {k: v.numpy() for k, v in records.parse_example(raw).items()}
            out[len(f["channels"]) + 1] = f
    return out


def _examples(ds, count: int):
    """Unbatches the first `count` examples into numpy dicts."""
    return list(ds.unbatch().take(count).as_numpy_iterator())


# --------------------------------------------------------------------------------------------
# Closed forms.


def test_chunk_weights_closed_form():
    np.testing.assert_allclose(data.chunk_weights(1), [1.0])
    w = np.array([1.0, 0.125, 0.1, 0.1])  # max((k + 1)^-3, 0.1)
    np.testing.assert_allclose(data.chunk_weights(4), w / w.sum())
    w = np.array([1.0, 0.25, 0.2])  # exponent 2, p_min 0.2
    np.testing.assert_allclose(data.chunk_weights(3, exponent=2.0, p_min=0.2), w / w.sum())
    with pytest.raises(ValueError, match="num_chunks"):
        data.chunk_weights(0)


def test_keep_probability_closed_form():
    np.testing.assert_allclose(data.keep_probability([10, 50, 100, 300], 100), [0.1, 0.5, 1, 1])
    with pytest.raises(ValueError, match="l_max"):
        data.keep_probability(3, 0)


# --------------------------------------------------------------------------------------------
# The sampler and the filter, measured on the pipeline itself.


def test_chunk_index_distribution_matches_formula(dataset_dir):
    ds = data.make_dataset(
        dataset_dir, "train", batch_size=64, chunk_size=CHUNK, overlap=OVERLAP, seed=1, l_max=1
    )
    examples = _examples(ds, 4096)
    by_n: dict[int, list[int]] = {}
    for e in examples:
        by_n.setdefault(int(e["num_chunks"]), []).append(int(e["chunk_index"]))
    tested = 0
    for n, ks in by_n.items():
        if n < 2 or len(ks) < 200:
            continue
        observed = np.bincount(ks, minlength=n)
        expected = data.chunk_weights(n) * len(ks)
        _, p = scipy.stats.chisquare(observed, expected)
        assert p > 1e-3, (n, observed, expected)
        tested += 1
    assert tested >= 3, {n: len(k) for n, k in by_n.items()}


def test_keep_rate_matches_length_over_l_max(dataset_dir):
    seqs = _sequences(dataset_dir)
    l_max = 2 * max(seqs)
    epochs = 200
    # No shuffling, so sequence_index (the stream index, epoch after epoch) arrives in order.
    ds = data.make_dataset(
        dataset_dir, "train", batch_size=50, chunk_size=CHUNK, overlap=OVERLAP, seed=2,
        l_max=l_max, shuffle_buffer=1,
    )  # fmt: skip
    kept = {length: 0 for length in seqs}
    done = False
    for batch in ds.as_numpy_iterator():
        for length, index in zip(batch["length"], batch["sequence_index"]):
            if index >= epochs * len(seqs):
                done = True
                break
            kept[int(length)] += 1
        if done:
            break
    lengths = np.array(sorted(seqs))
    observed = np.array([kept[int(n)] for n in lengths])
    p = data.keep_probability(lengths, l_max)
    expected = epochs * p
    # Each count is binomial(epochs, L / L_max): within 4.5 standard deviations.
    sd = np.sqrt(epochs * p * (1 - p))
    assert np.all(np.abs(observed - expected) <= 4.5 * sd + 1), (observed, expected)
    _, pvalue = scipy.stats.chisquare(
        np.stack([observed, epochs - observed]).ravel(),
        np.stack([expected, epochs - expected]).ravel(),
        ddof=0,
    )
    assert pvalue > 1e-3, (observed, expected)


def test_colorization_filter_counts_the_chroma_part(luma_first_dir):
    """With target_part 'chroma' the filter keeps a sequence with probability
    min((L - luma) / L_max, 1): the targets it holds, not its whole length."""
    cfg = records.representation_from_info(records.read_info(luma_first_dir))
    seqs = _sequences(luma_first_dir)
    assert len(seqs) == 16, "the fixture's lengths must be distinct"
    targets = {n: n - int(np.sum(f["channels"] < cfg.channels_per_plane)) for n, f in seqs.items()}
    # L_max the longest chroma part: every whole length passes it, so the old filter (whole
    # lengths) kept nearly everything.
    l_max = max(targets.values())
    assert sum(n >= l_max for n in seqs) >= 12
    epochs = 40
    ds = data.make_dataset(
        luma_first_dir, "train", batch_size=50, chunk_size=CHUNK, overlap=OVERLAP, seed=6,
        l_max=l_max, shuffle_buffer=1, target_part="chroma",
    )  # fmt: skip
    kept = {n: 0 for n in seqs}
    for batch in ds.as_numpy_iterator():
        inside = batch["sequence_index"] < epochs * len(seqs)
        for n in batch["length"][inside]:
            kept[int(n)] += 1
        if not inside.all():
            break
    lengths = sorted(seqs)
    observed = np.array([kept[n] for n in lengths])
    p = data.keep_probability([targets[n] for n in lengths], l_max)
    expected = epochs * p
    sd = np.sqrt(epochs * p * (1 - p))
    assert np.all(np.abs(observed - expected) <= 4.5 * sd + 1), (observed, expected)


def _twin_shards(src: str, dst: str) -> None:
    """Copies a two-shard dataset with shard 1 replaced by shard 0 (info.json's shard list,
    where there is one, agreeing): both input pipelines of a two-pipeline run then read the
    same records in the same order."""
    shutil.copytree(src, dst)
    shards = records.split_files(dst, "train")
    assert len(shards) == 2
    shutil.copyfile(shards[0], shards[1])
    info_path = os.path.join(dst, "info.json")
    with open(info_path) as f:
        info = json.load(f)
    listed = info["splits"]["train"].get("shards")
    if listed:
        listed[1] = dict(listed[0], file=listed[1]["file"])
        with open(info_path, "w") as f:
            json.dump(info, f)


def _pipeline(data_dir: str, pipeline: int, seed: int = 0):
    """Input pipeline `pipeline` of two, as tf.distribute builds it on each host."""
    context = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=2
    )
    return data.make_dataset(
        data_dir, "train", batch_size=16, chunk_size=CHUNK, overlap=OVERLAP, seed=seed,
        l_max=1, input_context=context,
    )  # fmt: skip


def test_input_pipelines_draw_independently(dataset_dir, tmp_path):
    """Two pipelines reading the same records: their shuffles and chunk draws are their own
    (they used to agree in every slot), and each is deterministic for its seed."""
    twin = str(tmp_path / "twin")
    _twin_shards(dataset_dir, twin)
    slots = 64
    a = _examples(_pipeline(twin, 0), slots)
    b = _examples(_pipeline(twin, 1), slots)
    # Each slot holds a record of the shard's 8 chosen by each shuffle: the same about 1 in 8.
    same_record = sum(int(x["length"]) == int(y["length"]) for x, y in zip(a, b))
    assert same_record < slots / 3, same_record
    # Chunk draws agree about as often as independent draws would: per slot, the probability
    # that two draws from the two sequences' chunk distributions are equal.
    agree = sum(int(x["chunk_index"]) == int(y["chunk_index"]) for x, y in zip(a, b))
    chance = []
    for x, y in zip(a, b):
        px, py = data.chunk_weights(int(x["num_chunks"])), data.chunk_weights(int(y["num_chunks"]))
        n = min(px.size, py.size)
        chance.append(float(np.sum(px[:n] * py[:n])))
    chance = np.array(chance)
    expected, sd = chance.sum(), np.sqrt(np.sum(chance * (1 - chance)))
    assert abs(agree - expected) <= 4.5 * sd, (agree, expected, sd)
    assert expected < 0.8 * slots  # a test that could tell the two apart
    # Each pipeline is deterministic for its seed, and the seed changes it.
    # (test_same_seed_same_batches shows that the seed changes the stream.)
    again = _examples(_pipeline(twin, 1), 16)
    for x, y in zip(b, again):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_pipeline_zero_keeps_the_single_pipeline_seeds():
    """Runs started before the pipeline id was folded in resume with the same stream."""
    assert data.pipeline_seeds(7) == data.pipeline_seeds(7, 0) == (7, (7, 0))
    shuffle_seed, key = data.pipeline_seeds(7, 1)
    assert key == (7, 1) and shuffle_seed not in (7, data.pipeline_seeds(7, 2)[0])
    assert data.pipeline_seeds(7, 1) == (shuffle_seed, key)
    assert 0 <= data.pipeline_seeds(-3, 1)[0] < 2**63


@pytest.mark.slow  # three pipelines built and read: about 4 s
def test_a_second_pipeline_resumes_from_a_checkpoint(dataset_dir, tmp_path):
    """The iterator checkpoint restores pipeline 1's position: its shuffle and draws resume."""
    it = iter(_pipeline(dataset_dir, 1, seed=3))
    for _ in range(3):
        next(it)
    saved = tf.train.Checkpoint(data=it).write(str(tmp_path / "ckpt" / "it"))
    expected = [next(it) for _ in range(3)]
    resumed = iter(_pipeline(dataset_dir, 1, seed=3))
    tf.train.Checkpoint(data=resumed).read(saved).assert_consumed()
    for x, y in zip(expected, [next(resumed) for _ in range(3)]):
        for k in x:
            np.testing.assert_array_equal(x[k].numpy(), y[k].numpy())


# --------------------------------------------------------------------------------------------
# What each example holds.


def test_inputs_are_exactly_the_prefix(dataset_dir):
    cfg = records.representation_from_info(records.read_info(dataset_dir))
    seqs = _sequences(dataset_dir)
    assert len(seqs) == 16, "the fixture's lengths must be distinct"
    ds = data.make_dataset(
        dataset_dir, "train", batch_size=16, chunk_size=CHUNK, overlap=OVERLAP, seed=3, l_max=1
    )
    checked_later_chunks = 0
    for e in _examples(ds, 160):
        f = seqs[int(e["length"])]
        seq = rep.DCTSequence(f["channels"], f["positions"], f["values"], f["height"], f["width"])
        start = int(e["chunk_start"])
        assert start == int(e["chunk_index"]) * CHUNK
        # The encoder's input: exactly the triples before the chunk, and nothing after.
        np.testing.assert_array_equal(e["dct_image"], rep.dct_image(seq, cfg, num_triples=start))
        # The window: overlap, then targets, then padding, each element where it belongs.
        full = {
            "channels": np.append(f["channels"], cfg.stop_token),
            "positions": np.append(f["positions"], 0),
            "values": np.append(f["values"], 0),
        }
        real = e["indices"] >= 0
        idx = e["indices"][real]
        assert np.all(np.diff(idx) == 1) and idx[0] == max(0, start - OVERLAP)
        for name, arr in full.items():
            np.testing.assert_array_equal(e[name][real], arr[idx])
            assert not e[name][~real].any()
        np.testing.assert_array_equal(e["loss_mask"] > 0, real & (e["indices"] >= start))
        np.testing.assert_array_equal(e["mask"] > 0, real)
        assert e["loss_mask"].sum() == min(CHUNK, int(e["length"]) - start)
        assert (e["height"], e["width"], e["label"]) == (f["height"], f["width"], -1)
        checked_later_chunks += start > 0
    assert checked_later_chunks > 10


def test_train_shapes_are_static(dataset_dir):
    ds = data.make_dataset(
        dataset_dir, "train", batch_size=8, chunk_size=CHUNK, overlap=OVERLAP, seed=0
    )
    for name, spec in ds.element_spec.items():
        assert spec.shape.is_fully_defined(), (name, spec.shape)
    assert ds.element_spec["dct_image"].shape == (8, 8, 8, 192)
    assert ds.element_spec["channels"].shape == (8, WINDOW)


def test_same_seed_same_batches(dataset_dir):
    make = lambda seed: data.make_dataset(
        dataset_dir, "train", batch_size=4, chunk_size=CHUNK, overlap=OVERLAP, seed=seed
    )
    a = list(make(7).take(6).as_numpy_iterator())
    b = list(make(7).take(6).as_numpy_iterator())
    c = list(make(8).take(6).as_numpy_iterator())
    for x, y in zip(a, b):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    differs = any(not np.array_equal(x[k], y[k]) for x, y in zip(a, c) for k in x)
    assert differs


def test_under_tf_distribute_with_two_cpus(dataset_dir, two_cpu_strategy):
    assert len(tf.config.list_logical_devices("CPU")) >= 2, "conftest splits the CPU in two"
    strategy = two_cpu_strategy
    global_batch = 8

    def dataset_fn(ctx: tf.distribute.InputContext):
        return data.make_dataset(
            dataset_dir, "train", batch_size=ctx.get_per_replica_batch_size(global_batch),
            chunk_size=CHUNK, overlap=OVERLAP, seed=0, input_context=ctx,
        )  # fmt: skip

    dist = strategy.distribute_datasets_from_function(dataset_fn)
    batch = next(iter(dist))

    @tf.function
    def step(b):
        return strategy.run(lambda x: tf.reduce_sum(x["loss_mask"]), args=(b,))

    per_replica = strategy.experimental_local_results(step(batch))
    assert len(per_replica) == 2
    shapes = [t.shape for t in strategy.experimental_local_results(batch["channels"])]
    assert shapes == [(4, WINDOW), (4, WINDOW)]


# --------------------------------------------------------------------------------------------
# Evaluation mode and colorization.


def test_eval_mode_walks_every_chunk_once(dataset_dir):
    seqs = _sequences(dataset_dir)
    ds = data.make_dataset(
        dataset_dir, "train", batch_size=7, chunk_size=CHUNK, overlap=OVERLAP, seed=0,
        mode="eval",
    )  # fmt: skip
    examples = list(ds.unbatch().as_numpy_iterator())
    by_seq: dict[int, list] = {}
    for e in examples:
        by_seq.setdefault(int(e["sequence_index"]), []).append(e)
    assert sorted(int(e[0]["length"]) for e in by_seq.values()) == sorted(seqs)
    for chunks in by_seq.values():
        length = int(chunks[0]["length"])
        assert [int(e["chunk_index"]) for e in chunks] == list(
            range(data.num_chunks_of(length, CHUNK))
        )
        # Every element carries loss exactly once over the chunks.
        covered = np.concatenate([e["indices"][e["loss_mask"] > 0] for e in chunks])
        np.testing.assert_array_equal(covered, np.arange(length))


def test_colorization_targets_only_chroma(luma_first_dir, dataset_dir):
    cfg = records.representation_from_info(records.read_info(luma_first_dir))
    seqs = _sequences(luma_first_dir)
    ds = data.make_dataset(
        luma_first_dir, "train", batch_size=16, chunk_size=CHUNK, overlap=OVERLAP, seed=4,
        l_max=1, target_part="chroma",
    )  # fmt: skip
    for e in _examples(ds, 64):
        f = seqs[int(e["length"])]
        targets = e["channels"][e["loss_mask"] > 0]
        assert np.all(targets >= cfg.channels_per_plane), "targets come from the chroma part"
        n_luma = int(np.sum(f["channels"] < cfg.channels_per_plane))
        assert int(e["chunk_start"]) == n_luma + int(e["chunk_index"]) * CHUNK
        # All luma is in the input image.
        assert np.count_nonzero(e["dct_image"][..., : cfg.channels_per_plane]) == n_luma
    with pytest.raises(ValueError, match="luma_first"):
        data.make_dataset(
            dataset_dir, "train", batch_size=1, chunk_size=CHUNK,
            overlap=OVERLAP, seed=0, target_part="chroma",
        )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Bad data.


def _list_appended_record(data_dir: str) -> None:
    """After a record was appended to shard 0: where info.json lists the shards, it lists shard
    0 as it now is (one record more, its new size), so that only the record is at fault."""
    info_path = os.path.join(data_dir, "info.json")
    with open(info_path) as f:
        info = json.load(f)
    shards = info["splits"]["train"].get("shards")
    if shards:
        shards[0]["bytes"] = os.path.getsize(os.path.join(data_dir, shards[0]["file"]))
        shards[0]["records"] += 1
        with open(info_path, "w") as f:
            json.dump(info, f)


def test_corrupt_shard_error_names_the_file(dataset_dir, tmp_path):
    broken = str(tmp_path / "broken")
    shutil.copytree(dataset_dir, broken)
    shard = records.split_files(broken, "train")[1]
    raw = bytearray(open(shard, "rb").read())
    raw[len(raw) // 2] ^= 0xFF
    open(shard, "wb").write(bytes(raw))
    ds = data.make_dataset(
        broken, "train", batch_size=4, chunk_size=CHUNK, overlap=OVERLAP, seed=0, mode="eval"
    )
    with pytest.raises(data.ShardReadError, match=os.path.basename(shard)):
        for _ in data.iterate(ds, records.split_files(broken, "train")):
            pass


def test_malformed_record_is_rejected(dataset_dir, tmp_path):
    broken = str(tmp_path / "malformed")
    shutil.copytree(dataset_dir, broken)
    shard = records.split_files(broken, "train")[0]
    bad = records.serialize_example(
        channels=np.array([0, 1]), positions=np.array([0, 0]), values=np.array([5, 5000]),
        height=64, width=64, key="planted-bad-record",
    )  # fmt: skip
    with open(shard, "ab") as f:
        f.write(records.tfrecord_frame(bad))
    _list_appended_record(broken)
    ds = data.make_dataset(
        broken, "train", batch_size=4, chunk_size=CHUNK, overlap=OVERLAP, seed=0, mode="eval"
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside") as err:
        for _ in ds:
            pass
    assert "planted-bad-record" in str(err.value)


def test_missing_dataset_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        data.make_dataset(
            str(tmp_path), "train", batch_size=1, chunk_size=CHUNK, overlap=OVERLAP, seed=0
        )


def test_record_with_unequal_arrays_is_rejected(dataset_dir, tmp_path):
    broken = str(tmp_path / "unequal")
    shutil.copytree(dataset_dir, broken)
    shard = records.split_files(broken, "train")[0]
    good = next(iter(tf.data.TFRecordDataset(shard))).numpy()
    example = tf.train.Example.FromString(good)
    values = example.features.feature["values"].int64_list.value
    del values[-1]  # one value fewer than positions
    example.features.feature["key"].bytes_list.value[0] = b"planted-short-record"
    with open(shard, "ab") as f:
        f.write(records.tfrecord_frame(example.SerializeToString()))
    _list_appended_record(broken)
    ds = data.make_dataset(
        broken, "train", batch_size=4, chunk_size=CHUNK, overlap=OVERLAP, seed=0, mode="eval"
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="corrupt record|differ in length"):
        for _ in ds:
            pass


# --------------------------------------------------------------------------------------------
# Shards against info.json's shard list: sizes at start, record counts as they are read.


def _copy_with_shard_list(src: str, dst: str) -> list[str]:
    """Copies a dataset and lists its shards in info.json as the Beam job does: records counted
    by TensorFlow's reader, sizes from the file system. Returns the shard paths."""
    shutil.copytree(src, dst)
    info_path = os.path.join(dst, "info.json")
    with open(info_path) as f:
        info = json.load(f)
    entry = info["splits"]["train"]
    names = [
        records.shard_name("train", i, entry["num_shards"]) for i in range(entry["num_shards"])
    ]
    paths = [os.path.join(dst, name) for name in names]
    listed = [
        {
            "file": name,
            "records": sum(1 for _ in tf.data.TFRecordDataset(path)),
            "bytes": os.path.getsize(path),
        }
        for name, path in zip(names, paths)
    ]
    # Where the Beam job listed them, it agrees with this independent count.
    assert entry.get("shards", listed) == listed
    entry["shards"] = listed
    with open(info_path, "w") as f:
        json.dump(info, f)
    return paths


def _rewrite(shard: str, raw_records: list[bytes]) -> None:
    with tf.io.TFRecordWriter(shard) as writer:
        for raw in raw_records:
            writer.write(raw)


def _set_listed_size(data_dir: str, index: int) -> None:
    """Makes info.json list shard `index`'s present size (so only the record count differs)."""
    info_path = os.path.join(data_dir, "info.json")
    with open(info_path) as f:
        info = json.load(f)
    shard = info["splits"]["train"]["shards"][index]
    shard["bytes"] = os.path.getsize(os.path.join(data_dir, shard["file"]))
    with open(info_path, "w") as f:
        json.dump(info, f)


def _eval_dataset(data_dir: str):
    return data.make_dataset(
        data_dir, "train", batch_size=4, chunk_size=CHUNK, overlap=OVERLAP, seed=0, mode="eval"
    )


def _read_all(ds, data_dir: str) -> list:
    return list(data.iterate(ds.as_numpy_iterator(), records.split_files(data_dir, "train")))


def test_shard_cut_at_a_record_boundary_is_refused(dataset_dir, tmp_path):
    broken = str(tmp_path / "cut")
    shard = _copy_with_shard_list(dataset_dir, broken)[1]
    kept = [r.numpy() for r in tf.data.TFRecordDataset(shard)][:-1]
    _rewrite(shard, kept)
    # A clean cut: every remaining record passes its checksums, so TF's reader cannot tell.
    assert sum(1 for _ in tf.data.TFRecordDataset(shard)) == len(kept)
    assert data.find_corrupt_shards([shard]) == [
        (shard, f"{len(kept)} records, but info.json lists {len(kept) + 1}")
    ]
    # At start: the size.
    with pytest.raises(records.DatasetError) as err:
        _eval_dataset(broken)
    assert str(err.value).startswith(f"{shard} is {os.path.getsize(shard)} bytes, shorter than")
    # As it is read: the count (info.json's size made to agree, as after a changed shard list).
    _set_listed_size(broken, 1)
    with pytest.raises(data.ShardReadError) as err:
        _read_all(_eval_dataset(broken), broken)
    assert str(err.value) == (
        f"TFRecord shard {shard} ends after {len(kept)} records, but {broken}/info.json lists "
        f"{len(kept) + 1} for it: it was cut short; rebuild the dataset or copy it again"
    )


def test_longer_shard_is_refused(dataset_dir, tmp_path):
    broken = str(tmp_path / "longer")
    shard = _copy_with_shard_list(dataset_dir, broken)[0]
    raw = [r.numpy() for r in tf.data.TFRecordDataset(shard)]
    _rewrite(shard, raw + raw[:1])
    with pytest.raises(records.DatasetError, match=f"{shard} is [0-9]+ bytes, longer than"):
        _eval_dataset(broken)
    _set_listed_size(broken, 0)
    with pytest.raises(data.ShardReadError) as err:
        _read_all(_eval_dataset(broken), broken)
    assert str(err.value).startswith(
        f"TFRecord shard {shard} holds more than the {len(raw)} records {broken}/info.json lists"
    )


def _without_shard_list(src: str, dst: str) -> None:
    """Copies a dataset as it was written before info.json listed its shards."""
    shutil.copytree(src, dst)
    with open(os.path.join(dst, "info.json")) as f:
        info = json.load(f)
    info["splits"]["train"].pop("shards", None)
    with open(os.path.join(dst, "info.json"), "w") as f:
        json.dump(info, f)


def test_count_checks_change_nothing_in_the_stream(dataset_dir, tmp_path):
    """The same examples, in the same order, with and without the shard list."""
    listed, unlisted = str(tmp_path / "listed"), str(tmp_path / "unlisted")
    _copy_with_shard_list(dataset_dir, listed)
    _without_shard_list(listed, unlisted)
    assert [s.num_records for s in records.split_shards(listed, "train")] != [None, None]
    assert [s.num_records for s in records.split_shards(unlisted, "train")] == [None, None]
    want = _read_all(_eval_dataset(unlisted), unlisted)
    got = _read_all(_eval_dataset(listed), listed)
    assert len(want) == len(got) > 0
    for x, y in zip(want, got):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


@pytest.mark.slow
def test_checked_pipeline_resumes_from_a_checkpoint(dataset_dir, tmp_path):
    """Training checkpoints the tf.data iterators: the record counts resume with them."""
    listed = str(tmp_path / "listed")
    _copy_with_shard_list(dataset_dir, listed)
    make = lambda: data.make_dataset(
        listed, "train", batch_size=4, chunk_size=CHUNK, overlap=OVERLAP, seed=5, shuffle_buffer=4
    )
    it = iter(make())
    for _ in range(5):
        next(it)
    saved = tf.train.Checkpoint(data=it).write(str(tmp_path / "ckpt" / "it"))
    expected = [next(it) for _ in range(6)]  # past the end of a shard, so its count is checked
    resumed = iter(make())
    tf.train.Checkpoint(data=resumed).read(saved).assert_consumed()
    for x, y in zip(expected, [next(resumed) for _ in range(6)]):
        for k in x:
            np.testing.assert_array_equal(x[k].numpy(), y[k].numpy())


def test_a_dataset_without_a_shard_list_is_read_unchecked(dataset_dir, tmp_path):
    """Datasets written before info.json listed shards keep working, cut shards included."""
    old = str(tmp_path / "old")
    _without_shard_list(dataset_dir, old)
    shard = records.split_files(old, "train")[1]
    raw = [r.numpy() for r in tf.data.TFRecordDataset(shard)]
    _rewrite(shard, raw[:-1])
    lengths = {int(e["length"]) for e in _read_all(_eval_dataset(old).unbatch(), old)}
    assert len(lengths) == 15  # the fixture's 16 distinct lengths, one record cut


def test_bad_record_is_one_error_naming_the_field_and_key(dataset_dir, tmp_path):
    """A crafted position 2^32 + 5 (which an int32 cast reads as 5) stops the pipeline; iterate
    turns it into a ShardReadError, which the command lines print as one line."""
    broken = str(tmp_path / "crafted")
    shutil.copytree(dataset_dir, broken)
    shard = records.split_files(broken, "train")[0]
    crafted = records.serialize_example(
        channels=np.array([0, 0]), positions=np.array([1, 2**32 + 5]), values=np.array([5, 5]),
        height=64, width=64, key="crafted-record",
    )  # fmt: skip
    with open(shard, "ab") as f:
        f.write(records.tfrecord_frame(crafted))
    _list_appended_record(broken)
    with pytest.raises(data.ShardReadError) as err:
        _read_all(_eval_dataset(broken), broken)
    message = str(err.value)
    assert "field position_deltas holds a number outside the int32 range" in message
    assert "crafted-record" in message and "\n" not in message


def test_a_bug_keeps_its_traceback():
    """An InvalidArgumentError that is no check of the data is not turned into a user error."""
    bug = tf.errors.InvalidArgumentError(None, None, "Incompatible shapes: [4] vs. [5]")
    assert data.input_error(bug, ["/data/train.tfrecord-00000-of-00001"]) is None
    ds = tf.data.Dataset.range(1).map(lambda i: tf.reshape(tf.range(i + 2), [3]))
    with pytest.raises(tf.errors.InvalidArgumentError):
        list(data.iterate(ds, ["/data/train.tfrecord-00000-of-00001"]))


def test_suggested_l_max_of_the_wrong_type_names_the_field():
    info = {"splits": {"train": {"lengths": {"suggested_l_max": "600"}}}}
    with pytest.raises(records.DatasetError, match="D/info.json: field splits.train.lengths"):
        data.default_l_max(info, "train", "D/info.json")
    assert (
        data.default_l_max({"splits": {"train": {"lengths": {"suggested_l_max": 9}}}}, "train") == 9
    )


# ----------------------------------------------------------------------------------------------
# Labels: checked against the model's classes, and dropped to the null label in training.


def _labels(ds, paths, count):
    return np.array([int(e["label"]) for e in data.iterate(ds.unbatch().take(count), paths)])


def _record_labels(data_dir: str, split: str) -> dict[int, int]:
    """length (stop included) -> the record's label."""
    out = {}
    for path in records.split_files(data_dir, split):
        for raw in tf.data.TFRecordDataset(path):
            f = records.parse_example(raw)
            out[int(tf.size(f["channels"])) + 1] = int(f["label"])
    return out


def test_a_label_outside_the_models_classes_is_named(labelled_data_dir):
    """The fixture's three classes read by a two-class model: the first record of class 2
    stops the pipeline with one line naming the label, the classes and the record."""
    ds = data.make_dataset(
        labelled_data_dir, "train", batch_size=2, chunk_size=16, overlap=4, seed=0,
        mode="eval", num_classes=2,
    )  # fmt: skip
    paths = records.split_files(labelled_data_dir, "train")
    with pytest.raises(data.ShardReadError) as err:
        list(data.iterate(ds, paths))
    message = str(err.value)
    assert "record label 2 is outside [0, 2)" in message and "num_classes = 2" in message
    assert "record key:" in message and "\n" not in message
    # The same records pass a three-class model.
    ds = data.make_dataset(
        labelled_data_dir, "train", batch_size=2, chunk_size=16, overlap=4, seed=0,
        mode="eval", num_classes=3,
    )  # fmt: skip
    assert len(list(data.iterate(ds, paths))) > 0


def test_an_unlabelled_record_is_refused_by_a_conditional_pipeline(dataset_dir):
    ds = data.make_dataset(
        dataset_dir, "train", batch_size=2, chunk_size=CHUNK, overlap=OVERLAP, seed=0,
        num_classes=4,
    )  # fmt: skip
    with pytest.raises(data.ShardReadError, match=r"record label -1 is outside \[0, 4\)"):
        next(iter(data.iterate(ds, records.split_files(dataset_dir, "train"))))


def test_label_dropout_replaces_labels_at_its_rate_and_only_in_training(labelled_data_dir):
    paths = records.split_files(labelled_data_dir, "train")
    truth = _record_labels(labelled_data_dir, "train")

    def stream(rate, seed=0, mode="train"):
        return data.make_dataset(
            labelled_data_dir, "train", batch_size=8, chunk_size=16, overlap=4, seed=seed,
            mode=mode, num_classes=3, label_dropout=rate, l_max=1,
        )  # fmt: skip

    n = 400
    examples = list(data.iterate(stream(0.25).unbatch().take(n), paths))
    labels = np.array([int(e["label"]) for e in examples])
    dropped = labels == -1
    # Binomial(400, 0.25): a two-sided 1e-6 band around 100.
    assert scipy.stats.binom.cdf(dropped.sum(), n, 0.25) > 1e-6
    assert scipy.stats.binom.sf(dropped.sum() - 1, n, 0.25) > 1e-6
    # A label that is kept is the record's own.
    kept = [(int(e["length"]), int(e["label"])) for e in examples if int(e["label"]) >= 0]
    assert kept and all(truth[length] == label for length, label in kept)
    # Deterministic for a seed, different for another; none at rate 0, none in eval mode.
    np.testing.assert_array_equal(labels, _labels(stream(0.25), paths, n))
    assert not np.array_equal(dropped, _labels(stream(0.25, seed=1), paths, n) == -1)
    assert (_labels(stream(0.0), paths, n) >= 0).all()
    assert (_labels(stream(0.5, mode="eval"), paths, 15) >= 0).all()


def test_label_dropout_needs_classes(dataset_dir):
    with pytest.raises(ValueError, match="label_dropout=0.1"):
        data.make_dataset(
            dataset_dir, "train", batch_size=2, chunk_size=CHUNK, overlap=OVERLAP, seed=0,
            label_dropout=0.1,
        )  # fmt: skip
