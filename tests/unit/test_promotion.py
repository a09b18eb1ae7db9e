from components.promotion import VersionFacts, decide_approval, decide_rejection

GOOD = VersionFacts(
    exists=True,
    has_certificate=True,
    gates_passed=True,
    status="awaiting_approval",
    certificate_sha256="abc123",
    is_candidate=True,
    base_version="1",
    champion_version="1",
)


def test_good_candidate_is_promoted():
    assert decide_approval(GOOD).promote
    assert decide_approval(GOOD, "abc123").promote


def test_refusals_name_their_reason():
    cases = [
        (VersionFacts(exists=False, has_certificate=False), "does not exist"),
        (VersionFacts(True, False, status="base"), "no unlearning certificate"),
        (
            VersionFacts(
                True, True, ("certificate.sha256: differs",), True, "awaiting_approval", "abc"
            ),
            "certificate: certificate.sha256",
        ),
        (VersionFacts(True, True, (), True, "approved", "abc"), "already approved"),
        (VersionFacts(True, True, (), True, "rejected", "abc"), "was rejected"),
        (VersionFacts(True, True, (), False, "awaiting_approval", "abc"), "gates did not pass"),
    ]
    for facts, reason in cases:
        d = decide_approval(facts)
        assert not d.promote and reason in d.text
    assert "is not the registered" in decide_approval(GOOD, "fff").text


def test_rejection_only_of_awaiting_versions():
    assert decide_rejection(GOOD).promote
    assert not decide_rejection(VersionFacts(True, True, status="approved")).promote


def test_a_stale_or_orphaned_candidate_is_refused():
    from dataclasses import replace

    orphan = decide_approval(replace(GOOD, is_candidate=False))
    assert not orphan.promote and "does not hold the candidate alias" in orphan.text
    stale = decide_approval(replace(GOOD, base_version="1", champion_version="2"))
    assert (
        not stale.promote and "built on version 1, but the champion is now version 2" in stale.text
    )


def test_separation_of_duties_lists_every_reason_and_an_empty_allow_list_admits_anyone():
    from components.promotion import separation_of_duties

    assert separation_of_duties("erin", (), {"carol"}, "dave") == []
    assert separation_of_duties("carol", ("erin",), {"carol"}, "carol") == [
        "carol is not an approver (review.approvers in params.yaml)",
        "carol submitted a request of this batch",
        "carol ran this batch",
    ]
    assert separation_of_duties("erin", ("erin",), set(), "") == []
