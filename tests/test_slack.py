from hypothesis import given
from hypothesis import strategies as st

from cato_core import slack
from cato_core.slack import SlackGraph


def test_paper_example_5_15_5_with_sla_50():
    base = {"A": 5.0, "B": 15.0, "C": 5.0}
    after = {"B": ["A"], "C": ["B"]}
    assert slack.budgets(base, after, 50.0) == {"A": 10.0, "B": 30.0, "C": 10.0}
    assert slack.deadlines(base, after, 50.0, arrival_s=100.0) == {"A": 110.0, "B": 140.0, "C": 150.0}


def test_diamond_budgets_follow_longest_path_through_each_node():
    # A -> (B: 10, C: 2) -> D; critical path A-B-D = 1 + 10 + 1 = 12, SLA 24 doubles it.
    base = {"A": 1.0, "B": 10.0, "C": 2.0, "D": 1.0}
    after = {"B": ["A"], "C": ["A"], "D": ["B", "C"]}
    assert slack.longest_paths(base, after) == {"A": 12.0, "B": 12.0, "C": 4.0, "D": 12.0}
    b = slack.budgets(base, after, 24.0)
    assert b == {"A": 2.0, "B": 20.0, "C": 12.0, "D": 2.0}
    # C's path gets 2 + 12 = 14 < 22 = A + B: the deadline of D takes the larger.
    assert slack.deadlines(base, after, 24.0) == {"A": 2.0, "B": 22.0, "C": 14.0, "D": 24.0}


def test_chain_fast_path_matches_general_path():
    chain = SlackGraph([(), (0,), (1,)])
    assert chain.chain
    general = SlackGraph([(), (0,), (0, 1)])  # same longest paths, not a simple chain
    assert not general.chain
    b = [5.0, 15.0, 5.0]
    assert chain.deadlines(b, 50.0) == general.deadlines(b, 50.0) == [10.0, 40.0, 50.0]


@given(
    st.lists(st.floats(0.0, 1e3, allow_subnormal=False), min_size=1, max_size=6),
    st.floats(0.0, 1e4),
    st.floats(0.0, 1e6),
)
def test_chain_deadlines_equal_the_budgets_walk_to_the_last_bit(b, sla, arrival):
    # The chain's shortcut in SlackGraph.deadlines against its definition: each node reached
    # at its budget plus its predecessor's reach, from the budgets of the same graph.
    g = SlackGraph([((i - 1,) if i else ()) for i in range(len(b))])
    reach: list[float] = []
    for i, x in enumerate(g.budgets(b, sla)):
        reach.append(x + max(reach[i - 1 : i], default=0.0))
    assert g.deadlines(b, sla, arrival) == [arrival + r for r in reach]
