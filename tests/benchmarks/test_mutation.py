"""The mutation check's machinery on one cheap rule: a kill is seen as a kill, a harmless edit as a survivor, the
tree is restored after each, and a snippet that is not in its file stops the check instead of scoring."""
import pytest

from benchmarks.accuracy.mutation import MUTATIONS, ROOT, Mutation, MutationError, check_imports, copy_tree, mutate

# One point per instance (runtime/counting/metrics.py: match_points); a single hand-made test checks it.
MATCHING_TEST = ("tests/runtime/counting/test_count_metrics.py::test_point_matching_on_a_hand_made_case",)


def test_every_mutation_finds_its_snippet_once_in_the_tree():
    """A refactor that moves a rule's code must move its mutation too, or the check would stop; and a mutated file
    must still be Python, or its tests error out instead of testing the rule (counted as an error, not a kill)."""
    for mutation in MUTATIONS:
        source = (ROOT / mutation.path).read_text()
        assert source.count(mutation.old) == 1, mutation.name
        compile(source.replace(mutation.old, mutation.new), mutation.path, "exec")
        assert mutation.old != mutation.new and mutation.tests, mutation.name
        assert all((ROOT / t.split("::")[0]).is_file() for t in mutation.tests), mutation.name


def test_a_broken_rule_is_killed_and_a_harmless_edit_survives(tmp_path):
    root = copy_tree(ROOT, tmp_path)
    check_imports(root)
    source = root / "runtime" / "counting" / "metrics.py"
    original = source.read_text()
    broken = Mutation("two hits per point", "a point hits one instance", "runtime/counting/metrics.py",
                      "tp = len(hit)\n", "tp = 2 * len(hit)\n", MATCHING_TEST)
    killed = mutate(broken, root)
    assert killed.outcome == "killed" and killed.failed and "test_point_matching" in killed.failed[0]
    assert source.read_text() == original, "the file is restored after the mutation"
    harmless = Mutation("same code, new comment", "none", "runtime/counting/metrics.py", "tp = len(hit)\n",
                        "tp = len(hit)  # mutated\n", MATCHING_TEST)
    survived = mutate(harmless, root)
    assert survived.outcome == "survived" and not survived.failed
    assert source.read_text() == original
    missing = Mutation("not there", "none", "runtime/counting/metrics.py", "no such code", "x", MATCHING_TEST)
    with pytest.raises(MutationError, match="occurs 0 times"):
        mutate(missing, root)


def test_the_copy_keeps_the_layout_the_tests_use_to_find_the_real_images(tmp_path):
    root = copy_tree(ROOT, tmp_path)
    assert root == tmp_path / "main" and (root / "benchmarks" / "accuracy" / "mutation.py").is_file()
    assert not (root / ".venv").exists(), "ignored files stay behind"
    real = ROOT.parent / "shared" / "real"
    if real.is_dir():  # as tests/runtime/counting/test_blank.py finds it: ../shared/real of the repository
        found = (root / "tests" / "runtime" / "counting" / "test_blank.py").resolve().parents[4] / "shared" / "real"
        assert found.resolve() == real.resolve()
