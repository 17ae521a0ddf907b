"""The patient lifecycle on real stores: the index on SQLite and PostgreSQL, receipts in SeaweedFS, the
notifications' own store and Notifier.  Roster import -> letter event with the code -> activation with
the right and wrong factors, lockout, automatic opening after 6 weeks, opposition with its receipt and its
reversal with a new code, closure and purge after 10 years, a minor coming of age.  Time is an injected
clock; nothing sleeps."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from config.tables import load_notify_policy
from connectors.outbound.receipts import OppositionReceipts
from hub.errors import NotFound, Refused
from hub.notices import Channel, Event, EventKind, NoticeState
from hub.records import PatientRecord, PatientStatus
from pipelines.notify.service import Notifier, NotifyPorts
from pipelines.record.core.lifecycle import LifecycleRules
from pipelines.record.core.profile import Activation, Profile
from pipelines.record.lifecycle import Lifecycle, LifecyclePorts
from pipelines.record.roster_import import import_roster
from storage.memory.bus import MemoryPublisher
from storage.objects import MinioBlobStore
from storage.sql.index import SqlIndex
from storage.sql.notifications import SqlNotifications
from storage.sql.profiles import SqlProfiles
from tests.builders import TEST_INS, TEST_OID, with_key

pytestmark = pytest.mark.integration
S = PatientStatus
START = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
SIX_WEEKS = timedelta(weeks=6)
SERIAL = "1234 5678 90"
HEADER = "ins,oid,birth_name,given_names,birth_date,sex,birth_place,email,phone,postal_address,status,vitale_serial\n"
CREATED_INS = TEST_INS
ACTIVE_INS = with_key("1850799123456")
OPPOSED_INS = with_key("1790399123456")
MINOR_INS = with_key("2080675123456")
PARENT_INS = with_key("2790675123456")


def line(ins: str, status: str = "created", *, born: str = "1979-03-01", serial: str = SERIAL) -> str:
    return (f"{ins},{TEST_OID},TEST,Jeanne,{born},F,51215,,,\"1 rue de Test; 75000 PARIS\",{status},{serial}\n")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class CountingPrinter:
    """The real opposition receipt printer (connectors.outbound.receipts), counting its renders."""

    def __init__(self, secret: bytes) -> None:
        self.inner = OppositionReceipts(secret=secret)
        self.rendered = 0

    def render(self, patient: PatientRecord, profile: Profile) -> bytes:
        self.rendered += 1
        assert profile.status is S.OPPOSED and profile.opposed_at is not None
        return self.inner.render(patient, profile)


@dataclass
class World:
    index: SqlIndex
    profiles: SqlProfiles
    notifications: SqlNotifications
    lifecycle: Lifecycle
    clock: Clock
    printer: CountingPrinter
    events: list[Event] = field(default_factory=list)
    audit: list[tuple[str, str, str]] = field(default_factory=list)
    purged: list[str] = field(default_factory=list)

    def import_roster(self, *lines: str) -> dict[str, object]:
        return import_roster((HEADER + "".join(lines)).encode(), self.index, self.lifecycle)

    def code_for(self, ins: str) -> str:
        codes = [e for e in self.events if e.ins == ins and e.kind is EventKind.ACTIVATION_CODE]
        assert codes, "no activation code event"
        return codes[-1].code

    def status(self, ins: str) -> PatientStatus:
        patient = self.index.patient(ins)
        assert patient is not None
        return patient.status

    def profile(self, ins: str) -> Profile:
        profile = self.profiles.profile(ins)
        assert profile is not None
        return profile


@pytest.fixture
def world(sql_index: SqlIndex, blob_store: MinioBlobStore) -> Iterator[World]:
    clock = Clock(START)
    notifications = SqlNotifications.beside(sql_index)
    queue = MemoryPublisher()  # the notify queue: activation letters are postal notices, never put on it
    notifier = Notifier(NotifyPorts(index=sql_index, notices=notifications, queue=queue,
                                    policy=load_notify_policy(), clock=clock))
    profiles = SqlProfiles.beside(sql_index)
    printer = CountingPrinter(secrets.token_bytes(32))
    holder: list[World] = []

    def announce(event: Event) -> None:
        holder[0].events.append(event)
        notifier.announce(event)

    lifecycle = Lifecycle(LifecyclePorts(
        index=sql_index, profiles=profiles, announce=announce, representatives=notifications.representatives,
        end_representation=lambda ins: notifications.set_representatives(ins, []), receipts=printer,
        store=blob_store, secret=secrets.token_bytes(32), rules=LifecycleRules(), clock=clock,
        purge=lambda ins: holder[0].purged.append(ins), audit=lambda *entry: holder[0].audit.append(entry),
        withdraw_codes=notifications.withdraw_codes))
    holder.append(World(sql_index, profiles, notifications, lifecycle, clock, printer))
    yield holder[0]
    assert queue.published == [], "a postal letter is batched, not queued"


def refused(rule: str, call: object, *args: object, **kwargs: object) -> dict[str, object]:
    assert callable(call)
    with pytest.raises(Refused) as caught:
        call(*args, **kwargs)
    assert caught.value.finding["rule"] == rule, caught.value.finding
    return caught.value.finding


def test_roster_import_sends_one_letter_and_activation_checks_the_factors_together(world: World) -> None:
    outcome = world.import_roster(line(CREATED_INS), line(ACTIVE_INS, "active"), line(OPPOSED_INS, "opposed"))
    assert outcome["profiles"] == {"created": 1, "active": 1, "opposed": 1, "status_synced": 0}
    [event] = world.events
    assert event.ins == CREATED_INS and event.code_expires == START + SIX_WEEKS and event.urgent
    [letter] = world.notifications.for_patient(CREATED_INS)
    assert letter.channel is Channel.POSTAL and letter.code == event.code and letter.code_expires == START + SIX_WEEKS
    assert world.profile(ACTIVE_INS).activated_at == START and world.profile(OPPOSED_INS).code_generation == 0

    again = world.import_roster(line(CREATED_INS), line(ACTIVE_INS, "active"), line(OPPOSED_INS, "opposed"))
    assert again["profiles"] == {"existing": 3, "status_synced": 0} and len(world.events) == 1

    code = event.code
    generic = "lifecycle.activation-refused"
    wrong_code = refused(generic, world.lifecycle.activate, CREATED_INS, "AAAA-BBBB-CCCC", SERIAL)
    wrong_card = refused(generic, world.lifecycle.activate, CREATED_INS, code, "9999999999")
    assert wrong_code == wrong_card  # nothing says which factor was wrong
    assert world.profile(CREATED_INS).failed_attempts == 2  # recorded before the refusal
    refused("lifecycle.activation-refused", world.lifecycle.activate, with_key("1990199123456"), code, SERIAL)

    world.clock.advance(timedelta(days=3))
    opened = world.lifecycle.activate(CREATED_INS, code.lower().replace("-", " "), "1234567890")
    assert opened.status is S.ACTIVE and opened.activation is Activation.CODE and opened.failed_attempts == 0
    assert world.status(CREATED_INS) is S.ACTIVE
    assert world.lifecycle.reimbursement_release_at(CREATED_INS) == START + timedelta(days=3, hours=48)
    refused("lifecycle.not-created", world.lifecycle.activate, CREATED_INS, code, SERIAL)
    assert (CREATED_INS, "lifecycle.activated", f"patient:{CREATED_INS}") in world.audit


def test_five_wrong_attempts_lock_activation_for_fifteen_minutes(world: World) -> None:
    world.import_roster(line(CREATED_INS))
    code = world.code_for(CREATED_INS)
    for _ in range(4):
        refused("lifecycle.activation-refused", world.lifecycle.activate, CREATED_INS, code, "0000000000")
    lock = refused("lifecycle.locked", world.lifecycle.activate, CREATED_INS, code, "0000000000")
    assert lock["retry_after_s"] == 900
    world.clock.advance(timedelta(minutes=15) - timedelta(seconds=1))
    still = refused("lifecycle.locked", world.lifecycle.activate, CREATED_INS, code, SERIAL)  # right, but locked
    assert still["retry_after_s"] == 1 and world.profile(CREATED_INS).failed_attempts == 5
    world.clock.advance(timedelta(seconds=1))
    assert world.lifecycle.activate(CREATED_INS, code, SERIAL).status is S.ACTIVE


def test_of_eight_concurrent_activations_one_wins_and_the_others_are_told_it_is_open(world: World) -> None:
    world.import_roster(line(CREATED_INS))
    code = world.code_for(CREATED_INS)

    def attempt(_: int) -> str:
        try:
            world.lifecycle.activate(CREATED_INS, code, SERIAL)
            return "won"
        except Refused as exc:
            return str(exc.finding["rule"])

    with ThreadPoolExecutor(8) as pool:
        outcomes = sorted(pool.map(attempt, range(8)))
    # issue 12: every refused attempt counts, so the 5th refusal locks like any series of attempts
    assert outcomes == ["lifecycle.locked"] * 3 + ["lifecycle.not-created"] * 4 + ["won"]
    assert [a for a in world.audit if a[1] == "lifecycle.activated"] == [
        (CREATED_INS, "lifecycle.activated", f"patient:{CREATED_INS}")]


def test_the_profile_opens_automatically_after_six_weeks(world: World) -> None:
    world.import_roster(line(CREATED_INS))
    code = world.code_for(CREATED_INS)
    assert world.lifecycle.sweep(START + SIX_WEEKS - timedelta(microseconds=1))["opened"] == 0
    world.clock.advance(SIX_WEEKS)
    assert world.lifecycle.sweep()["opened"] == 1
    opened = world.profile(CREATED_INS)
    # issue 12: opened automatically is `opened` (an open record), not `active` (activated by its holder)
    assert opened.status is S.OPENED and opened.activation is Activation.AUTOMATIC
    assert opened.activated_at == START + SIX_WEEKS and world.status(CREATED_INS) is S.OPENED
    [letter] = world.notifications.for_patient(CREATED_INS)  # never printed: withdrawn, its dead code erased
    assert (letter.state, letter.code) == (NoticeState.FAILED, "")
    assert world.lifecycle.reimbursement_release_at(CREATED_INS) == START + SIX_WEEKS + timedelta(hours=48)
    assert world.lifecycle.sweep()["opened"] == 0
    refused("lifecycle.no-code", world.lifecycle.activate, CREATED_INS, code, SERIAL)  # the letter's code is dead
    refused("lifecycle.not-created", world.lifecycle.oppose, CREATED_INS)  # too late: close instead
    world.import_roster(line(CREATED_INS))  # the roster still says created: the profile wins
    assert world.status(CREATED_INS) is S.OPENED and len(world.events) == 1


def test_the_holder_of_an_opened_profile_asks_for_a_code_and_only_then_becomes_active(world: World) -> None:
    world.import_roster(line(CREATED_INS))
    world.clock.advance(SIX_WEEKS)
    world.lifecycle.sweep()
    world.clock.advance(timedelta(weeks=30))          # months later, the holder wants to use their profile
    assert world.lifecycle.request_code(CREATED_INS, "0000000000", Channel.SMS) is None  # wrong serial: silent
    assert world.lifecycle.request_code(with_key("1990199123456"), SERIAL) is None         # no profile: silent
    assert len(world.events) == 1 and world.profile(CREATED_INS).failed_attempts == 1
    world.lifecycle.request_code(CREATED_INS, SERIAL, Channel.SMS)   # no phone known: a letter
    world.lifecycle.request_code(CREATED_INS, SERIAL, Channel.POSTAL)  # a second one: the first is withdrawn
    event = world.events[-1]
    assert len(world.events) == 3 and event.kind is EventKind.ACTIVATION_CODE and event.channel == "postal"
    states = [(n.state, bool(n.code)) for n in world.notifications.for_patient(CREATED_INS)]  # newest first
    assert states == [(NoticeState.QUEUED, True), (NoticeState.FAILED, False), (NoticeState.FAILED, False)]
    assert event.code_expires == world.clock.now + SIX_WEEKS
    [letter] = [n for n in world.notifications.for_patient(CREATED_INS) if n.event_id == event.event_id]
    assert letter.channel is Channel.POSTAL and letter.code == event.code   # `opened` row of the table
    assert world.status(CREATED_INS) is S.OPENED                            # asking changes nothing yet
    active = world.lifecycle.activate(CREATED_INS, event.code, SERIAL)
    assert active.status is S.ACTIVE and active.activation is Activation.CODE and active.failed_attempts == 0
    assert active.activated_at == START + SIX_WEEKS  # the opening stays the reimbursements' key
    assert world.status(CREATED_INS) is S.ACTIVE
    assert world.lifecycle.request_code(CREATED_INS, SERIAL) is None and len(world.events) == 3  # active: none
    assert all(not n.code for n in world.notifications.for_patient(CREATED_INS))  # the used code's letter too
    steps = [a[1] for a in world.audit if a[0] == CREATED_INS]
    assert "lifecycle.code-requested" in steps and "lifecycle.code-request-refused" in steps


def test_code_requests_are_rate_limited_like_activation(world: World) -> None:
    world.import_roster(line(CREATED_INS))
    for _ in range(5):  # the 5th is still sent, and locks
        assert world.lifecycle.request_code(CREATED_INS, SERIAL) is None
    lock = refused("lifecycle.locked", world.lifecycle.request_code, CREATED_INS, SERIAL)
    assert lock["retry_after_s"] == 900 and len(world.events) == 1 + 5
    refused("lifecycle.locked", world.lifecycle.activate, CREATED_INS, world.code_for(CREATED_INS), SERIAL)
    stranger = with_key("1990199123456")                 # an INS without a profile meets the same lock
    for _ in range(4):
        assert world.lifecycle.request_code(stranger, SERIAL) is None
    assert refused("lifecycle.locked", world.lifecycle.request_code, stranger, SERIAL)["retry_after_s"] == 900


def test_opposition_gives_a_stored_receipt_and_a_new_code_reverses_it(world: World) -> None:
    world.import_roster(line(CREATED_INS))
    code = world.code_for(CREATED_INS)
    world.clock.advance(timedelta(days=10))
    refused("lifecycle.activation-refused", world.lifecycle.oppose, CREATED_INS, code=code, vitale_serial="0" * 10)
    opposed = world.lifecycle.oppose(CREATED_INS, code=code, vitale_serial=SERIAL)
    assert opposed.status is S.OPPOSED and opposed.opposed_at == world.clock.now and opposed.receipt_key
    assert world.status(CREATED_INS) is S.OPPOSED
    receipt = world.lifecycle.receipt(CREATED_INS)
    assert receipt.startswith(b"%PDF-") and world.printer.rendered == 1
    world.clock.advance(timedelta(days=1))
    assert world.lifecycle.oppose(CREATED_INS, code=code, vitale_serial=SERIAL) == opposed  # same receipt
    assert world.lifecycle.oppose(CREATED_INS) == opposed and world.printer.rendered == 1
    assert world.lifecycle.receipt(CREATED_INS) == receipt

    refused("lifecycle.no-code", world.lifecycle.activate, CREATED_INS, code, SERIAL)  # the old letter
    assert world.lifecycle.sweep(START + timedelta(weeks=7))["opened"] == 0  # opposed stays opposed
    refused("lifecycle.opposed", world.lifecycle.close, CREATED_INS)

    world.clock.advance(timedelta(weeks=20))
    reissued = world.lifecycle.reissue_code(CREATED_INS)
    assert reissued.status is S.OPPOSED and reissued.code_generation == 2
    assert reissued.code_expires_at == world.clock.now + SIX_WEEKS
    new_code = world.code_for(CREATED_INS)
    assert new_code != code and len({e.event_id for e in world.events}) == 2
    refused("lifecycle.activation-refused", world.lifecycle.activate, CREATED_INS, code, SERIAL)
    active = world.lifecycle.activate(CREATED_INS, new_code, SERIAL)
    assert active.status is S.ACTIVE and active.activated_at == world.clock.now
    assert world.status(CREATED_INS) is S.ACTIVE


def test_a_roster_opposition_gets_its_receipt_on_request(world: World) -> None:
    world.import_roster(line(OPPOSED_INS, "opposed"))
    with pytest.raises(NotFound):
        world.lifecycle.receipt(OPPOSED_INS)
    receipted = world.lifecycle.oppose(OPPOSED_INS)
    assert receipted.status is S.OPPOSED and receipted.receipt_key
    assert world.lifecycle.receipt(OPPOSED_INS).startswith(b"%PDF-")
    with pytest.raises(NotFound):
        world.lifecycle.oppose(with_key("1990199123456"))


def test_closure_archives_ten_years_then_purges_once(world: World) -> None:
    world.import_roster(line(ACTIVE_INS, "active"))
    world.clock.now = datetime(2028, 2, 29, 12, 0, tzinfo=UTC)
    closed = world.lifecycle.close(ACTIVE_INS)
    assert closed.status is S.CLOSED and closed.closed_at == world.clock.now
    assert closed.purge_after == datetime(2038, 2, 28, 12, 0, tzinfo=UTC)
    assert world.status(ACTIVE_INS) is S.CLOSED
    assert world.lifecycle.close(ACTIVE_INS) == closed
    refused("lifecycle.closed", world.lifecycle.oppose, ACTIVE_INS)
    refused("lifecycle.closed", world.lifecycle.reissue_code, ACTIVE_INS)
    assert world.lifecycle.sweep(datetime(2038, 2, 28, 11, 59, 59, tzinfo=UTC))["purged"] == 0
    assert world.lifecycle.sweep(datetime(2038, 2, 28, 12, 0, tzinfo=UTC))["purged"] == 1
    assert world.purged == [ACTIVE_INS] and world.profile(ACTIVE_INS).purged_at is not None
    assert world.lifecycle.sweep(datetime(2040, 1, 1, tzinfo=UTC))["purged"] == 0 and world.purged == [ACTIVE_INS]


def test_a_minor_coming_of_age_leaves_representation_and_gets_their_own_code(world: World) -> None:
    world.notifications.set_representatives(MINOR_INS, [PARENT_INS])
    world.import_roster(line(PARENT_INS), line(MINOR_INS, born="2008-06-15"))
    world.import_roster(line(MINOR_INS, born="2008-06-15"))  # nothing new: the letter was announced already
    [first] = [n for n in world.notifications.for_patient(PARENT_INS) if n.about_ins == MINOR_INS]
    assert first.kind is EventKind.ACTIVATION_CODE  # the minor's letter went to the legal representative
    assert world.notifications.for_patient(MINOR_INS) == []

    eve = datetime(2026, 6, 14, 21, 59, 59, tzinfo=UTC)  # 23:59:59 in Paris, on the eve of the birthday
    assert world.lifecycle.sweep(eve)["came_of_age"] == 0
    world.clock.now = datetime(2026, 6, 14, 22, 0, tzinfo=UTC)  # midnight in Paris: 18 years old
    counts = world.lifecycle.sweep()
    assert counts["came_of_age"] == 1 and counts["invited"] == 1
    assert world.notifications.representatives(MINOR_INS) == []
    invited = world.profile(MINOR_INS)
    assert invited.status is S.CREATED and invited.code_generation == 2
    assert invited.code_expires_at == world.clock.now + SIX_WEEKS  # the young adult's own 6 weeks
    [own] = [n for n in world.notifications.for_patient(MINOR_INS) if n.kind is EventKind.ACTIVATION_CODE]
    assert own.code == world.code_for(MINOR_INS) and own.code != first.code
    assert (PARENT_INS, "lifecycle.representation-ended", "system:meshub") in world.audit
    assert world.lifecycle.sweep()["came_of_age"] == 0  # once
    assert world.lifecycle.activate(MINOR_INS, own.code, SERIAL).activation is Activation.CODE


def test_an_open_minors_profile_stays_open_and_the_young_adult_takes_it_over(world: World) -> None:
    world.import_roster(line(MINOR_INS, "active", born="2008-06-15"), line(PARENT_INS, "active"))
    world.notifications.set_representatives(MINOR_INS, [PARENT_INS])
    refused("lifecycle.not-created", world.lifecycle.activate, MINOR_INS, "AAAA-BBBB-CCCC", SERIAL)
    assert world.lifecycle.sweep(datetime(2026, 6, 15, 6, 0, tzinfo=UTC))["invited"] == 1
    taken = world.lifecycle.activate(MINOR_INS, world.code_for(MINOR_INS), SERIAL)
    assert taken.status is S.ACTIVE and taken.activation is Activation.CODE and taken.activated_at == START


def test_a_letter_never_handed_over_is_sent_on_the_next_import(world: World) -> None:
    world.import_roster(line(CREATED_INS))
    world.profiles.reissue(CREATED_INS, code_sha256="0" * 64, expires_at=START + SIX_WEEKS,
                           from_statuses=(S.CREATED,), now=START)  # as if the process died before announcing
    outcome = world.import_roster(line(CREATED_INS))
    assert outcome["profiles"] == {"recovered": 1, "status_synced": 0}
    assert world.profile(CREATED_INS).code_generation == 3 and len(world.events) == 2
    assert world.lifecycle.activate(CREATED_INS, world.code_for(CREATED_INS), SERIAL).status is S.ACTIVE
