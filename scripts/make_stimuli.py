# ruff: noqa: E501  (the hand-written stimuli are long string literals, one per line)
"""Write emolens' built-in appraisal stimuli (``src/emolens/resources/stimuli_*.jsonl``).

Every text below was written for this project. A pair is one template whose ``{a|b}`` slots hold
the only words that differ between its two members; the design values come from a base profile
per outcome frame plus the per-type moves declared in ``stimuli_schema.json``. The JSONL files
are the source of truth that ships; rerun this script only to regenerate them after an edit here:

    .venv/bin/python scripts/make_stimuli.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESOURCES = ROOT / "src" / "emolens" / "resources"

APPRAISALS = (
    "suddenness", "familiarity", "predict_event", "pleasantness", "unpleasantness",
    "goal_relevance", "chance_responsblt", "self_responsblt", "other_responsblt",
    "predict_conseq", "goal_support", "urgency", "self_control", "other_control",
    "chance_control", "accept_conseq", "standards", "social_norms", "attention",
    "not_consider", "effort",
)


def profile(*values: int) -> dict[str, int]:
    assert len(values) == len(APPRAISALS)
    return dict(zip(APPRAISALS, values, strict=True))


# ---------------------------------------------------------------------------------------------
# Base profiles of the pair frames (the fixed design values before a type's own settings).

BASES = {
    #        sud fam pev pls unp rel chR slR otR pcq gsp urg slC otC chC acc std soc att ncs eff
    "harm": profile(3, 3, 2, 1, 5, 4, 1, 1, 1, 3, 1, 3, 2, 2, 2, 2, 3, 1, 4, 3, 3),
    "benefit": profile(3, 3, 3, 5, 1, 4, 1, 1, 1, 4, 5, 2, 3, 2, 2, 5, 1, 1, 4, 1, 3),
    "neutral": profile(2, 3, 3, 3, 2, 2, 2, 1, 2, 4, 3, 1, 2, 3, 2, 4, 1, 1, 3, 1, 1),
}

# Per type: the base a frame starts from, fixed settings shared by both members, then the
# member moves (must match x-pair-types in stimuli_schema.json; validate_stimuli checks it).
TYPE_DESIGN: dict[str, dict] = {
    "responsibility_self_other": {
        "fixed": {},
        "a": {"self_responsblt": 5, "other_responsblt": 1},
        "b": {"self_responsblt": 1, "other_responsblt": 5},
    },
    "responsibility_self_chance": {
        "fixed": {},
        "a": {"self_responsblt": 5, "chance_responsblt": 1},
        "b": {"self_responsblt": 1, "chance_responsblt": 5},
    },
    "responsibility_other_chance": {
        "fixed": {},
        "a": {"other_responsblt": 5, "chance_responsblt": 1},
        "b": {"other_responsblt": 1, "chance_responsblt": 5},
    },
    "pleasantness": {
        "fixed": {"goal_relevance": 5, "chance_responsblt": 3, "other_responsblt": 2, "urgency": 2,
                  "attention": 4, "accept_conseq": 3, "predict_event": 2, "suddenness": 3},
        "a": {"pleasantness": 5, "unpleasantness": 1, "goal_support": 5},
        "b": {"pleasantness": 1, "unpleasantness": 5, "goal_support": 1},
    },
    "suddenness": {
        "fixed": {},
        "a": {"suddenness": 1, "predict_event": 5},
        "b": {"suddenness": 5, "predict_event": 1},
    },
    "control": {
        "fixed": {"self_responsblt": 2, "chance_responsblt": 3},
        "a": {"self_control": 5, "chance_control": 1},
        "b": {"self_control": 1, "chance_control": 5},
    },
    "norm_violation": {
        "fixed": {"pleasantness": 3, "unpleasantness": 3, "goal_relevance": 3, "attention": 4},
        "a": {"standards": 5, "social_norms": 5},
        "b": {"standards": 1, "social_norms": 1},
    },
}

# frame -> base profile and extra fixed settings (norm frames fix who acts).
FRAME_BASE = {"harm": "harm", "benefit": "benefit", "outcome": "neutral", "pleasant": "benefit",
              "neutral": "neutral", "self_public": "neutral", "self_private": "neutral", "other": "neutral"}
FRAME_FIXED = {"self_public": {"self_responsblt": 5}, "self_private": {"self_responsblt": 5},
               "other": {"other_responsblt": 5}}

DOMAINS = ("work", "family", "health", "friends", "money", "travel")

# ---------------------------------------------------------------------------------------------
# Minimal pairs: (domain, frame, template). Four per domain and type, in DOMAINS order.

PAIRS: dict[str, list[tuple[str, str, str]]] = {
    "responsibility_self_other": [
        ("work", "harm", "{I|My colleague} deleted the shared folder by mistake, and a week of the team's work was gone."),
        ("work", "harm", "{I|My manager} mixed up the dates, so the client arrived to an empty meeting room."),
        ("work", "harm", "{I|A coworker} spilled coffee over my printed reports right before the board meeting."),
        ("work", "benefit", "{I|My teammate} found the bug that had been crashing our app for weeks."),
        ("family", "harm", "{I|My brother} forgot to pick up Grandma from the station, and she waited there for two hours."),
        ("family", "harm", "{I|My sister} let the dog off the lead in the park, and he ran into the road and got hurt."),
        ("family", "harm", "{I|My dad} left the oven on, and the family's holiday dinner burned."),
        ("family", "benefit", "{I|My mother} planned the whole anniversary party for my grandparents, and everyone loved it."),
        ("health", "harm", "{I|The nurse} mixed up my father's pills, and he spent the night feeling awful."),
        ("health", "harm", "{I|My flatmate} left the wet kitchen floor unmarked, and my grandmother slipped and hurt her hip."),
        ("health", "harm", "{I|Our trainer} pushed my friend too hard at the gym, and she tore a muscle in her shoulder."),
        ("health", "benefit", "{I|My doctor} spotted the early signs of the infection, so it was treated in time."),
        ("friends", "harm", "{I|Another guest} told everyone at the party about my friend's engagement before she could."),
        ("friends", "harm", "{I|Tom} lost the tickets, so none of us could get into the concert."),
        ("friends", "harm", "{I|My friend} scratched the car we had borrowed for the weekend."),
        ("friends", "benefit", "{I|Our friend Mia} cooked the whole dinner for our reunion, and everyone asked for the recipe."),
        ("money", "harm", "{I|My partner} paid the electricity bill late, and we were charged a fifty-euro fee."),
        ("money", "harm", "{I|The bank clerk} typed the wrong account number, and our rent went to a stranger."),
        ("money", "harm", "{I|My flatmate} lost the deposit receipt, so the landlord kept our money."),
        ("money", "benefit", "{I|My accountant} found a mistake in my tax return, and I got three hundred euros back."),
        ("travel", "harm", "{I|My travel partner} booked the hotel for the wrong month, and we had nowhere to stay."),
        ("travel", "harm", "{I|The taxi driver} took a wrong turn, and we missed our flight."),
        ("travel", "harm", "{I|My cousin} left the passports at home, and we had to turn back at the airport."),
        ("travel", "benefit", "{I|Our guide} found a shortcut through the hills, and we reached the lake before sunset."),
    ],
    "responsibility_self_chance": [
        ("work", "harm", "{I accidentally erased|A power surge erased} the presentation my team had prepared all weekend."),
        ("work", "harm", "{My own typo|A system glitch} sent the wrong price list to all our customers."),
        ("work", "harm", "{I knocked|The wind knocked} our prototype off the window ledge, and it shattered."),
        ("work", "benefit", "{My careful planning|Pure luck} got our team the last free slot at the conference."),
        ("family", "harm", "{I knocked|A small tremor knocked} my grandma's old vase off the shelf, and it broke into pieces."),
        ("family", "harm", "Our family photos were lost when {I formatted|a power surge wiped} the old hard drive."),
        ("family", "harm", "The birthday dinner for my mother was spoiled because {I unplugged|a power cut switched off} the fridge overnight."),
        ("family", "benefit", "{My careful weeding|The mild weather} gave us the best tomato harvest the family has ever had."),
        ("health", "harm", "{I fell asleep at the wheel|A tree fell across the road}, and my father broke his arm in the crash."),
        ("health", "harm", "My father's blood test had to be repeated because {I dropped|a power cut spoiled} the sample."),
        ("health", "harm", "My little son got badly sunburnt at the beach because {I forgot to pack|a leak had emptied} the sunscreen."),
        ("health", "benefit", "{My months of training|A lucky draw} got me a place in the city marathon."),
        ("friends", "harm", "{I dropped|A gust of wind blew} my friend's phone into the lake."),
        ("friends", "harm", "{I forgot to book|A flood closed} the restaurant for my best friend's birthday, so we ate at home."),
        ("friends", "harm", "{I stepped on|A falling branch smashed} the guitar my friend had lent me."),
        ("friends", "benefit", "{My own persistence|A lucky coincidence} brought my old school friends together again after ten years."),
        ("money", "harm", "Our savings shrank by a third because {I picked the wrong fund|the market crashed} that spring."),
        ("money", "harm", "{I dented|A hailstorm dented} our new car, and the repair will cost a month's salary."),
        ("money", "harm", "{I spilled water over|A power surge fried} my sister's laptop, and she cannot afford a new one."),
        ("money", "benefit", "{My careful budgeting|A winning lottery ticket} paid for our new washing machine."),
        ("travel", "harm", "We missed the last ferry because {I misread|the storm changed} the timetable."),
        ("travel", "harm", "{I forgot to charge|The cold drained} the phone with all our tickets on it, and we were stuck at the station."),
        ("travel", "harm", "All the clothes in my friend's suitcase got soaked because {I left the window open|the roof of the hut leaked}."),
        ("travel", "benefit", "{My early booking|A lucky cancellation} got us a cabin with a sea view."),
    ],
    "responsibility_other_chance": [
        ("work", "harm", "{My colleague unplugged|A power cut shut down} our server, and the whole night's data was lost."),
        ("work", "harm", "{My boss cancelled|The snowstorm cancelled} the training trip I had been looking forward to."),
        ("work", "harm", "I lost the promotion because {my supervisor gave|a company merger gave} my position to someone else."),
        ("work", "harm", "{A coworker scratched|Falling ice scratched} my car in the company car park."),
        ("family", "harm", "{My cousin smashed|A falling shelf smashed} the old clock my grandfather left us."),
        ("family", "harm", "{My uncle called off|The storm called off} the family reunion we had planned all year."),
        ("family", "harm", "{My neighbour cut down|A storm brought down} the apple tree my grandfather planted."),
        ("family", "harm", "{My brother sold|A fire destroyed} our parents' old house before I could say goodbye to it."),
        ("health", "harm", "My leg was broken when {a careless driver hit|a rockslide hit} my bike."),
        ("health", "harm", "{The receptionist lost|A computer crash erased} my referral, and my surgery was pushed back three months."),
        ("health", "harm", "My grandmother caught pneumonia because {the care home switched off|a storm knocked out} the heating for days."),
        ("health", "harm", "{A smoker's cigarette|The pollen} at the bus stop set off my asthma attack."),
        ("friends", "harm", "{A guest spilled wine over|A leak in the roof ruined} the painting my friend had made for me."),
        ("friends", "harm", "{Jake cancelled|Heavy rain washed out} our camping weekend at the last minute."),
        ("friends", "harm", "{Her boss transferred|A factory closure sent} my best friend to another city."),
        ("friends", "harm", "{A careless waiter dropped|A wobbly table tipped over} the cake we had ordered for Anna's birthday."),
        ("money", "harm", "{My landlord kept|Water damage swallowed} my whole security deposit."),
        ("money", "harm", "{A scammer wiped out|A currency crash wiped out} the savings I had put aside for years."),
        ("money", "harm", "{A neighbour's kid broke|A hailstone broke} our windscreen, and the repair costs us a week's wages."),
        ("money", "harm", "I lost my weekend income when {the owner shut|a fire destroyed} the café where I worked."),
        ("travel", "harm", "{A pickpocket took|A wave swept away} my bag with the passports on the first day of our trip."),
        ("travel", "harm", "{The hotel gave away|A fire damaged} the room we had booked for our honeymoon."),
        ("travel", "harm", "{A drunk passenger|An engine fault} delayed our train by five hours, and we missed the wedding."),
        ("travel", "harm", "{The tour operator closed|A landslide closed} the mountain trail we had travelled all this way to hike."),
    ],
    "pleasantness": [
        ("work", "outcome", "The email from HR said that my contract {will|will not} be renewed next year."),
        ("work", "outcome", "The client called to say they had {accepted|rejected} our proposal."),
        ("work", "outcome", "The company announced that everyone in my team would {get|lose} their end-of-year bonus."),
        ("work", "outcome", "My application for the research grant came back {approved|declined}."),
        ("family", "outcome", "The adoption agency called to say our application {was accepted|was refused}."),
        ("family", "outcome", "The vet said our old dog {would|would not} recover from the operation."),
        ("family", "outcome", "My parents told me they are moving {closer to us|far away from us} next spring."),
        ("family", "outcome", "My grandfather's scan showed the tumour {had shrunk|had grown} since the summer."),
        ("health", "outcome", "The biopsy showed that the lump in my neck {was harmless|was malignant}."),
        ("health", "outcome", "After the operation, the surgeon told me I would {soon|never} walk without a cane again."),
        ("health", "outcome", "My eye exam showed that my vision {had improved|had worsened} since last year."),
        ("health", "outcome", "The fertility clinic called to say my treatment {had worked|had failed}."),
        ("friends", "outcome", "My best friend wrote that she is moving {back to|away from} our town."),
        ("friends", "outcome", "{Everyone|No one} from my old class came to my birthday dinner."),
        ("friends", "outcome", "My friend's band {won|lost} the competition they had practised for all year."),
        ("friends", "outcome", "Ana replied that she {would|would not} be my bridesmaid."),
        ("money", "outcome", "The bank {approved|rejected} our mortgage application."),
        ("money", "outcome", "The letter from the tax office said I {was owed|owed} eight hundred euros."),
        ("money", "outcome", "My shares {doubled|halved} in value over the summer."),
        ("money", "outcome", "The landlord told us the rent would go {down|up} next year."),
        ("travel", "outcome", "The airline told us our lost suitcase {had been found|could not be found}."),
        ("travel", "outcome", "When we reached the summit, the sky was {clear|cloudy} and we {could|could not} see the whole valley."),
        ("travel", "outcome", "The embassy {granted|refused} my visa for the trip to see my cousins."),
        ("travel", "outcome", "The weather on our beach week was {sunny|rainy} from start to finish."),
    ],
    "suddenness": [
        ("work", "neutral", "{As planned|Without warning}, the office moved our desks to the third floor."),
        ("work", "pleasant", "{As promised|Out of the blue}, my manager gave me a raise."),
        ("work", "neutral", "{After weeks of notice|With no notice at all}, our team switched to a new email system."),
        ("work", "pleasant", "{As expected|Unexpectedly}, the director praised my report in front of the whole team."),
        ("family", "pleasant", "My brother came home for the holidays, {just as he had planned|without telling anyone beforehand}."),
        ("family", "neutral", "{As they had announced|Out of nowhere}, my parents repainted the living room green."),
        ("family", "pleasant", "{On the day we had agreed|On a random Tuesday}, my aunt's parcel of homemade jam arrived."),
        ("family", "neutral", "My father shaved off his beard, {as he had announced|without saying a word}."),
        ("health", "neutral", "The clinic moved my appointment to Friday, {as they had warned me|with no warning at all}."),
        ("health", "pleasant", "{As scheduled|Unexpectedly early}, the doctor took the cast off my arm."),
        ("health", "neutral", "{As announced|Without any notice}, my doctor's practice switched to online booking."),
        ("health", "pleasant", "{As the doctor had predicted|Against every prediction}, my blood pressure was back to normal."),
        ("friends", "pleasant", "{As we had arranged|Without any warning}, my old friend from school showed up at my door."),
        ("friends", "neutral", "{As she had announced|Out of the blue}, my friend dyed her hair dark blue."),
        ("friends", "pleasant", "{As planned|Out of nowhere}, my friends threw a dinner for me at the end of exam week."),
        ("friends", "neutral", "{As he had long planned|All of a sudden}, my friend Max swapped his car for a bicycle."),
        ("money", "pleasant", "{As expected|Unexpectedly}, a tax refund of two hundred euros landed in my account."),
        ("money", "neutral", "{As the bank had announced|Without notice}, my bank changed the layout of its app."),
        ("money", "pleasant", "{As my contract stated|Out of the blue}, my pay went up by five percent in January."),
        ("money", "neutral", "{After a letter announcing it|With no announcement}, the utility company swapped our electricity meter."),
        ("travel", "neutral", "{As the timetable said|Without any announcement}, our train left from a different platform."),
        ("travel", "pleasant", "{As the booking said|Without us asking}, the hotel upgraded our room to a suite."),
        ("travel", "neutral", "{As the captain had announced|Without any announcement}, our plane turned towards a different runway."),
        ("travel", "pleasant", "{As the guide had promised|Out of nowhere}, a pod of dolphins appeared next to our boat."),
    ],
    "control": [
        ("work", "harm", "Our team lost its biggest client, and I {had every chance|had no chance} to win them back in time."),
        ("work", "harm", "The server crashed overnight, and I {had every chance|had no chance} to back up the files beforehand."),
        ("work", "harm", "My intern made a serious error in her first week, and I {could easily have|could never have} caught it in time."),
        ("work", "harm", "The deadline slipped by two weeks, and it {was|was not} in my power to keep the project on track."),
        ("family", "harm", "Grandpa fell on the stairs at night, and I {could have|could not have} fixed the loose step beforehand."),
        ("family", "harm", "Our old cat slipped out and never came back, and I {was in a position|was in no position} to stop her."),
        ("family", "harm", "My little brother failed his final exams, and I {had plenty of|had no} time to help him study."),
        ("family", "harm", "My parents' basement flooded during the storm, and I {had the means|had no means} to pump it out before the damage spread."),
        ("health", "harm", "My mother's illness was found late, and I {could have|could not have} got her to a doctor sooner."),
        ("health", "harm", "My teammate's back injury got worse, and I {had every chance|had no chance} to keep her out of the match."),
        ("health", "harm", "My son caught measles at school, and I {could have|could not have} kept him home that week."),
        ("health", "harm", "My grandmother's fever rose overnight, and it {was|was not} in my power to get her to the hospital earlier."),
        ("friends", "harm", "My friend got lost on the hike, and I {had every chance|had no chance} to turn back for her."),
        ("friends", "harm", "My friend's flat was burgled while I was staying there, and I {could have|could not have} prevented it."),
        ("friends", "harm", "Our friendship fell apart over a rumour, and it was {within|beyond} my power to stop it spreading."),
        ("friends", "harm", "My friend missed her sister's wedding, and I {could have|could not have} driven her there in time."),
        ("money", "harm", "Our savings lost a third of their value, and I {could have|could not have} moved them to a safer account in time."),
        ("money", "harm", "The company I had invested in went bankrupt, and I {had every chance|had no chance} to sell my shares beforehand."),
        ("money", "harm", "My mother's car broke down for good, and I {could have|could not have} spotted the problem earlier."),
        ("money", "harm", "Our rent doubled when the building was sold, and I {had a way|had no way} to lock in the old contract."),
        ("travel", "harm", "Our luggage was lost on the connecting flight, and I {could have|could not have} kept it with me in the cabin."),
        ("travel", "harm", "We missed the ferry to the island, and I {had every chance|had no chance} to get us to the port on time."),
        ("travel", "harm", "A storm damaged our holiday house, and I {could have|could not have} closed the shutters before it hit."),
        ("travel", "harm", "My father got altitude sickness on our trip, and I {was in a position|was in no position} to change our route."),
    ],
    "norm_violation": [
        ("work", "self_public", "At the team meeting, I took credit for {Sara's|my own} idea."),
        ("work", "self_private", "I {went through the drawers of|left a note on} my colleague's desk while she was at lunch."),
        ("work", "other", "My manager {shouted insults at|gave feedback to} the new trainee in front of the whole team."),
        ("work", "other", "A colleague of mine {lied to|was honest with} the client about our delivery date."),
        ("family", "self_public", "At my grandmother's funeral, I {laughed out loud during|sat quietly through} the eulogy."),
        ("family", "self_private", "I {read|returned} my sister's diary while she was out."),
        ("family", "other", "My uncle {made a racist joke|told a story about his youth} at the family dinner."),
        ("family", "other", "My cousin {took money from|put money into} Grandma's purse without asking."),
        ("health", "self_public", "In the waiting room, I {pushed in front of|chatted politely with} an elderly patient."),
        ("health", "self_private", "I {lied to the doctor about|told the doctor honestly} how much I drink."),
        ("health", "other", "A man with a bad cough {refused|agreed} to wear a mask in the crowded waiting room where I sat."),
        ("health", "other", "The nurse {discussed|kept quiet about} my father's diagnosis in front of other patients."),
        ("friends", "self_public", "At my best friend's wedding, I {got drunk and interrupted|listened to} the speeches."),
        ("friends", "self_public", "At the party, I {told everyone|kept quiet about} my friend's secret."),
        ("friends", "other", "My friend {cheated|played fairly} at the board game night to win the prize."),
        ("friends", "other", "At our dinner, Mark {mocked|asked about} the waiter's accent."),
        ("money", "self_private", "At the shop, I {kept|returned} the extra change the cashier gave me by mistake."),
        ("money", "self_public", "I {left without paying for|paid for} my coffee at the busy café."),
        ("money", "other", "The car dealer {hid|pointed out} the rust damage before my brother signed the contract."),
        ("money", "other", "A man ahead of me at the cash machine {pocketed|handed back} the banknotes the woman before him had left behind."),
        ("travel", "self_public", "I {pushed ahead of|waited behind} the other passengers at the boarding gate."),
        ("travel", "self_public", "When we visited the temple, I {kept my shoes on|took my shoes off} at the entrance."),
        ("travel", "other", "On our tour, a tourist {carved his name into|took a photo of} the ancient wall."),
        ("travel", "other", "The taxi driver {charged us triple|charged us} the posted fare from the airport."),
    ],
}

# ---------------------------------------------------------------------------------------------
# Singles: one prototype profile per emotion, then (domain, text) items.

PROTOTYPES = {
    #             sud fam pev pls unp rel chR slR otR pcq gsp urg slC otC chC acc std soc att ncs eff
    "anger": profile(4, 3, 2, 1, 5, 4, 1, 1, 5, 3, 1, 4, 2, 5, 1, 1, 4, 4, 4, 4, 4),
    "boredom": profile(1, 5, 5, 2, 3, 1, 2, 2, 2, 5, 2, 1, 2, 3, 2, 4, 2, 1, 1, 3, 2),
    "disgust": profile(4, 2, 2, 1, 5, 2, 2, 1, 4, 3, 1, 3, 2, 4, 2, 2, 5, 4, 4, 5, 3),
    "fear": profile(5, 1, 1, 1, 5, 5, 3, 1, 3, 1, 1, 5, 1, 3, 4, 1, 2, 1, 5, 4, 5),
    "guilt": profile(3, 2, 3, 1, 4, 4, 1, 5, 1, 3, 1, 3, 4, 2, 1, 3, 5, 3, 4, 4, 4),
    "joy": profile(3, 3, 3, 5, 1, 5, 2, 2, 3, 4, 5, 2, 3, 3, 2, 5, 1, 1, 4, 1, 2),
    "neutral": profile(1, 5, 5, 3, 2, 1, 2, 3, 2, 5, 3, 1, 4, 2, 1, 5, 1, 1, 2, 1, 1),
    "pride": profile(2, 3, 3, 5, 1, 5, 1, 5, 1, 4, 5, 2, 5, 2, 1, 5, 1, 1, 4, 1, 4),
    "relief": profile(3, 2, 2, 4, 2, 5, 3, 2, 3, 3, 4, 4, 2, 3, 3, 4, 1, 1, 5, 2, 3),
    "sadness": profile(3, 2, 2, 1, 5, 5, 4, 1, 2, 3, 1, 3, 1, 2, 4, 2, 2, 1, 4, 4, 3),
    "shame": profile(4, 2, 2, 1, 5, 4, 1, 5, 2, 3, 1, 4, 3, 2, 1, 2, 4, 5, 4, 4, 3),
    "surprise": profile(5, 1, 1, 4, 2, 3, 3, 1, 3, 2, 3, 3, 1, 3, 3, 4, 1, 1, 5, 1, 2),
    "trust": profile(2, 4, 4, 4, 2, 4, 1, 2, 5, 4, 4, 2, 2, 5, 1, 4, 1, 1, 4, 1, 2),
}

SINGLES: dict[str, list[tuple[str, str]]] = {
    "anger": [
        ("work", "My manager gave the project I had built from scratch to his friend and told me to train him."),
        ("work", "A coworker blamed me in front of the director for a mistake she had made herself."),
        ("work", "The company cut our overtime pay without telling anyone, and we found out from our payslips."),
        ("work", "My team leader presented my analysis as his own in the quarterly review."),
        ("family", "My brother borrowed my car and returned it with an empty tank and a dented bumper."),
        ("family", "My father read my private messages and then lectured me about them at dinner."),
        ("family", "My sister promised to look after our mother for the weekend and then simply didn't turn up."),
        ("health", "The clinic kept me waiting for four hours and then said the doctor had gone home."),
        ("health", "The insurance company refused to cover my surgery over a form they had lost themselves."),
        ("health", "A driver parked across the only disabled space, so my grandmother could not get out of the car."),
        ("friends", "My friend posted an unflattering photo of me online after I begged her not to."),
        ("friends", "A guy I know spread a lie that I had cheated on my partner."),
        ("friends", "My roommate ate the birthday cake I had baked for my girlfriend."),
        ("friends", "A friend borrowed five hundred euros from me and now pretends the loan never happened."),
        ("money", "The landlord kept my whole deposit and claimed damage that was there before I moved in."),
        ("money", "My bank charged me fees three months in a row for a service I had cancelled."),
        ("money", "A seller online took my money and never sent the phone."),
        ("travel", "The airline cancelled our flight and refused to rebook us until the following week."),
        ("travel", "A man cut in front of me and the whole queue at passport control, and the officer let him through."),
        ("travel", "The hotel gave our room away while we were out and put our bags in a storage cupboard."),
    ],
    "boredom": [
        ("work", "I spent the whole afternoon copying numbers from one spreadsheet into another."),
        ("work", "The training session repeated the same safety slides I have seen every year for six years."),
        ("work", "I sat through a three-hour meeting where nothing was decided and nothing concerned my team."),
        ("work", "I had to read a hundred pages of terms and conditions to check for a single changed word."),
        ("family", "At the family gathering, my uncle told the same fishing story he tells every Christmas."),
        ("family", "I waited in the car for two hours while my parents looked at kitchen tiles."),
        ("family", "Sunday lunch at my grandparents' went exactly as it always does, down to the same conversation."),
        ("health", "I spent the afternoon in the hospital waiting room with nothing to read and no signal on my phone."),
        ("health", "For six weeks my physiotherapy was the same twenty leg lifts, every single morning."),
        ("health", "I had to stay in bed for three days with a cold and there was nothing on television."),
        ("friends", "My friend showed me four hundred holiday photos of the same beach."),
        ("friends", "We sat in the same bar as every Friday and talked about the same things as every Friday."),
        ("friends", "I watched my friends play a video game for three hours without ever getting a turn."),
        ("money", "I spent my evening sorting a year of receipts into folders for the tax return."),
        ("money", "I was on hold with the bank for fifty minutes, listening to the same tune over and over."),
        ("money", "The financial planner read out every line of the pension brochure to me."),
        ("money", "I spent Saturday morning counting coins from the shop till, one stack at a time."),
        ("travel", "My train stood still in a field for two hours with nothing to look at."),
        ("travel", "My bus ride across the plains was eight hours of flat fields that all looked the same."),
        ("travel", "I spent my whole layover sitting at an empty gate in a small airport at night."),
    ],
    "disgust": [
        ("work", "Someone in my office left a half-eaten fish sandwich in the shared fridge for three weeks."),
        ("work", "My coworker clipped his toenails at his desk during lunch."),
        ("work", "I learned that my boss had been harassing the youngest interns for years."),
        ("family", "My little nephew sneezed straight into the salad bowl at dinner."),
        ("family", "When I cleaned out my late aunt's fridge, the milk had turned into a green lump."),
        ("family", "The dog rolled in a dead fox and then jumped onto my bed."),
        ("health", "The hospital bathroom I had to use had blood smeared on the wall, and nobody had cleaned it."),
        ("health", "At the clinic, the nurse dropped the needle for my injection on the floor and was about to use it anyway."),
        ("health", "I bit into an apple and found half a worm wriggling inside."),
        ("health", "The showers at my gym were covered in slime and there were used plasters on the floor."),
        ("friends", "My friend's kitchen had dirty dishes growing mould stacked up to the ceiling."),
        ("friends", "At my party, a guy licked the dip spoon and put it back in the bowl."),
        ("friends", "A friend of mine bragged about cheating his elderly neighbour out of her savings."),
        ("money", "I found out that a charity I donated to had spent the money on the director's holidays."),
        ("money", "A landlord showed us a flat with rat droppings all over the kitchen counters."),
        ("money", "At my bank, a rich customer laughed at a cleaner who asked for a small loan."),
        ("travel", "The toilet on my night bus overflowed, and the floor of the aisle was soaked."),
        ("travel", "The sheets in our hotel room had someone else's hair and stains on them."),
        ("travel", "A man at the street stall wiped his nose with his hand and then served me the noodles."),
        ("travel", "A passenger on the plane took off his socks and put his bare feet on my armrest."),
    ],
    "fear": [
        ("work", "My boss called me into his office and closed the door after weeks of rumours about layoffs."),
        ("work", "A machine on the factory floor caught fire right next to where I was standing."),
        ("work", "My first talk to the board was due in ten minutes, and my notes had disappeared."),
        ("family", "My son did not come home from school, and nobody knew where he was."),
        ("family", "I heard footsteps downstairs in the middle of the night while my family was asleep."),
        ("family", "My father collapsed in the kitchen, and I waited for the ambulance not knowing if he was breathing."),
        ("health", "The doctor found a lump and said we would have to wait two weeks for the biopsy result."),
        ("health", "My chest started hurting and my left arm went numb while I was alone at home."),
        ("health", "My daughter's fever kept rising in the middle of the night, and she would not wake up properly."),
        ("health", "I was about to be wheeled into surgery when the anaesthetist mentioned possible complications."),
        ("friends", "A man followed me and my friend for several blocks after we left the club."),
        ("friends", "My friend had been missing for a day after a hiking trip, and the police started searching."),
        ("friends", "A dog broke loose in the park and ran growling towards me and my friend's toddler."),
        ("money", "A letter said I owed a huge tax debt and that bailiffs might come to the house."),
        ("money", "I had no money left for rent, and the eviction hearing was the next morning."),
        ("money", "Someone had stolen my identity and was taking out loans in my name."),
        ("travel", "Our plane dropped sharply in the storm, and the oxygen masks came down."),
        ("travel", "Our car skidded on the icy mountain road towards the edge of a cliff."),
        ("travel", "I got lost alone in a forest as it was getting dark, and my phone battery died."),
        ("travel", "During the ferry crossing, huge waves broke over the deck and the crew told us to put on life jackets."),
    ],
    "guilt": [
        ("work", "I let a junior colleague take the blame for a mistake that was actually mine."),
        ("work", "I called in sick to go to a concert, and my teammates had to cover my shift."),
        ("work", "I missed an error in the report I checked, and a colleague got a formal warning for it."),
        ("work", "I padded my timesheet to get paid for hours I did not work."),
        ("family", "I snapped at my mother on the phone, and she went into hospital before I could apologise."),
        ("family", "I promised my little sister I would come to her school play and then forgot about it."),
        ("family", "I didn't visit my grandfather in the care home for months because I was busy with my own life."),
        ("health", "I kept smoking around my children even though the doctor said it worsened my son's asthma."),
        ("health", "I went to work with the flu, and half of my team got sick."),
        ("health", "I didn't drive my friend to her hospital appointment as I had promised, and she missed it."),
        ("friends", "I read my friend's letters while she was out and never told her."),
        ("friends", "I forgot my best friend's birthday for the first time in fifteen years."),
        ("friends", "I broke my friend's camera and told her it had been like that when I borrowed it."),
        ("money", "I spent the money my parents gave me for tuition on a holiday."),
        ("money", "I borrowed money from my brother and have been avoiding paying it back for a year."),
        ("money", "I kept the wallet I found on the street after taking out the cash."),
        ("money", "I overcharged an elderly customer and only realised after she had left."),
        ("travel", "I left my dog with a neighbour during my trip, and he ran away through a gap in the fence I hadn't mentioned."),
        ("travel", "I talked my friends into the hike, and one of them broke her ankle on the trail."),
        ("travel", "I lost my partner's grandmother's ring on the beach after I insisted on wearing it."),
    ],
    "joy": [
        ("work", "I got the job offer from the company I had dreamed of working for."),
        ("work", "My team finished the project early, and the boss took us all out for dinner."),
        ("work", "My colleagues threw a little party for my tenth year at the company."),
        ("family", "My sister gave birth to a healthy baby girl this morning."),
        ("family", "My whole family came together at the lake for the first time in ten years."),
        ("family", "My parents told me they are coming to visit for a whole month."),
        ("family", "My son took his first steps across the living room towards me."),
        ("health", "My mother's cancer test came back clear."),
        ("health", "After months of physiotherapy I was able to go for a run again."),
        ("health", "The doctor told us we were expecting a baby after two years of trying."),
        ("friends", "My best friend called to say she is moving back to my city."),
        ("friends", "My friends and I spent a warm evening singing around a campfire by the sea."),
        ("friends", "An old friend I had lost touch with found me online, and we talked for hours."),
        ("money", "I won a weekend trip in a raffle at the local fair."),
        ("money", "I found a fifty-euro note in the pocket of an old winter coat."),
        ("money", "We finally got the keys to our first flat of our own."),
        ("money", "My partner got a raise, and we could finally afford a holiday."),
        ("travel", "We woke up in the mountain hut to a perfect sunrise over the glacier."),
        ("travel", "My partner and I finally saw the northern lights on our trip to Norway."),
        ("travel", "Our flight home was upgraded to business class for free."),
    ],
    "neutral": [
        ("work", "I answered a few emails and filed some forms before lunch."),
        ("work", "I took the usual bus to the office and started work at nine."),
        ("work", "The printer ran out of paper, so I put in a new stack."),
        ("work", "I updated the shared calendar with next week's meeting times."),
        ("family", "I called my mother to ask what time dinner would be on Sunday."),
        ("family", "We went to the supermarket and bought groceries for the week."),
        ("family", "My father asked me to help carry a table into the garage."),
        ("family", "I folded the laundry and put it away in the wardrobe."),
        ("health", "I went to the pharmacy to pick up my regular allergy tablets."),
        ("health", "I had a routine dental check-up, and nothing needed doing."),
        ("health", "I measured my blood pressure in the morning, as I do every day."),
        ("friends", "A friend texted to ask for the name of the café we went to last month."),
        ("friends", "I lent a friend from my street a screwdriver for the afternoon."),
        ("friends", "We met at the usual place and walked to the cinema."),
        ("money", "I paid the monthly electricity bill online."),
        ("money", "I checked my bank balance on my phone while waiting for the kettle."),
        ("money", "I transferred the rent to my landlord at the start of the month."),
        ("travel", "I bought a train ticket for next Tuesday's trip to the city."),
        ("travel", "I packed a small bag for a one-night business trip."),
        ("travel", "The taxi dropped me off at the station ten minutes before my train."),
    ],
    "pride": [
        ("work", "I led the team that delivered the new product on time, and the director thanked me by name."),
        ("work", "The research paper I wrote on my own was accepted at a top conference."),
        ("work", "I negotiated a contract that saved my company a great deal of money."),
        ("work", "I was promoted to team leader after three years of hard work."),
        ("family", "I built a wooden treehouse for my kids with my own hands."),
        ("family", "I cooked Christmas dinner for twelve people for the first time, and everyone asked for seconds."),
        ("family", "I became the first person in my family to graduate from university."),
        ("family", "I raised my daughter on my own, and this week she started at medical school."),
        ("health", "I quit smoking after twenty years and have not touched a cigarette in a year."),
        ("health", "I finished my first marathon after training for it all winter."),
        ("health", "I lost twenty kilos by changing my diet and walking every day."),
        ("friends", "I gave the speech at my best friend's wedding, and the whole room applauded."),
        ("friends", "I organised a fundraiser with my friends, and we raised enough to pay for a neighbour's surgery."),
        ("friends", "I taught my friend to swim, and she swam across the lake last weekend."),
        ("money", "I paid off my student loan years early by saving every month."),
        ("money", "I saved up on my own for two years and bought my first car in cash."),
        ("money", "I started a small business from my kitchen, and it turned a profit in its first year."),
        ("travel", "I planned a three-week trip through six countries, and every connection worked."),
        ("travel", "I reached the top of the mountain that I had failed to climb twice before."),
        ("travel", "I learned enough Japanese before the trip to order food and ask for directions on my own."),
    ],
    "relief": [
        ("work", "I found out the layoffs would not affect my department after all."),
        ("work", "The file I thought I had deleted turned up in the backup just before the deadline."),
        ("work", "The audit was finished, and they found no problems in my accounts."),
        ("work", "My boss said the client had not noticed the mistake in my slides."),
        ("family", "My teenage daughter, who had not answered her phone all night, walked in the door at dawn unharmed."),
        ("family", "The storm passed, and our parents' house on the coast was left standing."),
        ("family", "My brother called to say he had not been on the bus that crashed."),
        ("health", "My biopsy came back benign after two weeks of waiting."),
        ("health", "My son's fever finally broke after three sleepless nights."),
        ("health", "The surgeon came out and said my father's operation had gone without complications."),
        ("health", "The test showed that the dog bite had not given me an infection."),
        ("friends", "My friend who had been missing on the hike was found safe by the rescue team."),
        ("friends", "After our big fight, my best friend called and said she wanted to stay friends."),
        ("friends", "The lump my friend had found turned out to be a harmless cyst."),
        ("money", "The bank approved our loan just in time to stop our house from being repossessed."),
        ("money", "The tax office wrote that the large bill had been sent to me by mistake."),
        ("money", "My lost wallet was handed in at the police station with everything still inside."),
        ("travel", "We made the connecting flight with one minute to spare after running through the airport."),
        ("travel", "My passport, which I thought had been stolen, was at the bottom of my backpack."),
        ("travel", "The turbulence stopped, and our plane landed safely."),
    ],
    "sadness": [
        ("work", "The small company I had worked at for twenty years closed down for good."),
        ("work", "My favourite colleague, who had been my mentor, retired and moved to another country."),
        ("work", "I did not get the job after the fifth interview, and it was the one I really wanted."),
        ("family", "My grandmother passed away in her sleep last night."),
        ("family", "Our family dog had to be put down after fourteen years with us."),
        ("family", "My parents told me they are getting divorced after thirty years."),
        ("family", "I moved out of my parents' house, and my old room now stands empty."),
        ("health", "My father was diagnosed with dementia, and some days he no longer recognises me."),
        ("health", "My best friend's cancer came back, and the doctors said there is nothing more they can do."),
        ("health", "I had a miscarriage in the third month."),
        ("health", "My grandfather can no longer walk and has to move into a care home."),
        ("friends", "My childhood friend moved to Australia, and we will probably not see each other for years."),
        ("friends", "A close friend of mine died in a car accident at the age of thirty."),
        ("friends", "I realised my oldest friend and I have nothing left to talk about."),
        ("money", "We had to sell my late father's house because we could not afford to keep it."),
        ("money", "My savings were gone after months without work, and I had to move back in with my parents."),
        ("money", "I had to sell my guitar, which I had played since I was twelve, to pay the rent."),
        ("travel", "I said goodbye to my host family at the airport after a year abroad."),
        ("travel", "When I returned to the town where I grew up, the flood had washed away my old school."),
        ("travel", "Our holiday had to be cancelled because my mother fell ill."),
    ],
    "shame": [
        ("work", "I fell asleep during a client meeting, and my boss had to wake me in front of everyone."),
        ("work", "My manager read out my error-filled report to the whole team as an example of what not to do."),
        ("work", "I was caught taking office supplies home, and the whole department heard about it."),
        ("work", "I gave a presentation with the company's name misspelled on every slide."),
        ("family", "I got drunk at my sister's wedding and knocked over the cake in front of all the guests."),
        ("family", "At a family dinner, my parents found out I had been lying about finishing my degree."),
        ("family", "My child repeated a rude word at school that he had learned from me, and the teacher called us in."),
        ("health", "I fainted during a blood test and cried in front of the whole waiting room."),
        ("health", "The doctor told me in front of my partner that my weight gain came from my drinking."),
        ("health", "I had to admit to the nurse that I had not taken any of my medication for a month."),
        ("friends", "My friends overheard me making fun of one of them behind her back."),
        ("friends", "I forgot the lyrics halfway through singing at my friend's party, and everyone went quiet."),
        ("friends", "I was the only one at the party who had come in costume, and everyone stared at me."),
        ("money", "My card was declined at a fancy restaurant while I was treating my colleagues."),
        ("money", "I had to ask my younger brother to lend me money for rent in front of our parents."),
        ("money", "A debt collector came to my door while the neighbours were watching."),
        ("travel", "I was caught without a ticket on the train and had to show my ID in front of a full carriage."),
        ("travel", "I was stopped at customs with undeclared goods and searched in front of my colleagues."),
        ("travel", "I shouted at a waiter abroad and later realised I had misunderstood him."),
        ("travel", "I got horribly seasick on the boat tour and threw up on the deck in front of the other tourists."),
    ],
    "surprise": [
        ("work", "My quiet coworker turned out to be a famous jazz pianist in his spare time."),
        ("work", "The CEO walked into our small office and sat down for coffee with us."),
        ("work", "I was offered a job at a company I had never applied to."),
        ("work", "At the end-of-year meeting my name was read out as employee of the year, which I had no idea about."),
        ("family", "My brother, who lives abroad, knocked on my door unannounced on my birthday."),
        ("family", "My parents, married forty years, told me they were going backpacking across South America."),
        ("family", "I found out I have a half-sister I had never heard of."),
        ("family", "My grandmother, who is ninety, sent me a message on social media for the first time."),
        ("health", "The X-ray showed I had been walking around with a broken toe for a month without knowing."),
        ("health", "The scan showed I was expecting twins."),
        ("health", "My new doctor turned out to be my old classmate from primary school."),
        ("friends", "My friends jumped out from behind the sofa when I switched on the lights."),
        ("friends", "My shy friend announced that she had got engaged to someone none of us had met."),
        ("friends", "I ran into my best friend from school on a street thousands of kilometres from home."),
        ("money", "A letter arrived saying I had inherited money from a distant relative I never knew."),
        ("money", "I checked my account and found a refund I had long forgotten about."),
        ("money", "The old painting from our attic turned out to be worth a small fortune."),
        ("travel", "On a remote island, the waiter at our hotel turned out to be from my hometown."),
        ("travel", "Snow started falling in the desert on our last night."),
        ("travel", "Our train stopped in the middle of nowhere, and a brass band got on and started playing."),
    ],
    "trust": [
        ("work", "My team lead told me she would back my proposal in the meeting, and I knew she would."),
        ("work", "I handed my biggest client to my colleague during my leave, certain she would look after them."),
        ("work", "My mentor has given me honest advice for years, so I followed her recommendation without hesitation."),
        ("work", "My business partner signs contracts on my behalf, and I have never had reason to doubt him."),
        ("family", "I left my baby with my mother for the weekend, knowing she would take perfect care of him."),
        ("family", "My brother handles all my paperwork while I am abroad, and I never need to check it."),
        ("family", "When I told my father about my debts, he listened and promised to help without judging."),
        ("health", "My surgeon explained every step of the operation, and I felt completely safe in her hands."),
        ("health", "I have seen the same family doctor for twenty years, and I follow her advice without second-guessing."),
        ("health", "My partner held my hand through the treatment, and I knew he would be there every day."),
        ("friends", "I told my best friend a secret I had never shared with anyone, knowing it would stay with her."),
        ("friends", "My friend offered to keep my spare house key, and I gave it to him without a second thought."),
        ("friends", "When I lost my job, my friends said they would help me move, and they all came on time."),
        ("friends", "My friend promised to feed my cat for two weeks, and I left without giving it another thought."),
        ("money", "My financial adviser has been straight with me for years, so I let her manage my savings."),
        ("money", "I lent my neighbour money, sure that she would pay it back as she always does."),
        ("money", "My sister and I share a bank account, and neither of us ever checks what the other spends."),
        ("travel", "Our guide had led the route a hundred times, so we followed him across the glacier without worry."),
        ("travel", "I left my passport with the local family I was staying with while I swam, and it was right where I left it."),
        ("travel", "The pilot calmly explained the delay, and I settled back into my seat knowing we were in good hands."),
    ],
}

_SLOT = re.compile(r"\{([^{}|]*)\|([^{}|]*)\}")


def expand(template: str) -> tuple[str, str]:
    """The two member texts of a ``{a|b}`` template (an empty side drops the slot)."""
    a = " ".join(_SLOT.sub(lambda m: m.group(1), template).split())
    b = " ".join(_SLOT.sub(lambda m: m.group(2), template).split())
    return a, b


def build() -> dict[str, list[dict]]:
    """The lines of both JSONL files, keyed by file name."""
    schema = json.loads((RESOURCES / "stimuli_schema.json").read_text())
    rules = schema["x-pair-types"]
    pair_lines, n = [], 0
    for kind, items in PAIRS.items():
        design = TYPE_DESIGN[kind]
        for domain, frame, template in items:
            n += 1
            fixed = {**BASES[FRAME_BASE[frame]], **design["fixed"], **FRAME_FIXED.get(frame, {})}
            text_a, text_b = expand(template)
            emotions = rules[kind]["frames"][frame]
            members = {}
            for member, text in (("a", text_a), ("b", text_b)):
                values = {**fixed, **design[member]}
                members[member] = {"text": text, "emotion": emotions[member],
                                   "appraisals": {k: values[k] for k in APPRAISALS}}
            pair_lines.append({"pair_id": f"pair-{n:03d}", "type": kind,
                               "manipulated": rules[kind]["manipulated"], "domain": domain,
                               "frame": frame, **members})
    single_lines = []
    for emotion, items in SINGLES.items():
        for i, (domain, text) in enumerate(items, start=1):
            single_lines.append({"id": f"single-{emotion}-{i:02d}", "emotion": emotion, "domain": domain,
                                 "text": text, "appraisals": dict(PROTOTYPES[emotion])})
    return {"stimuli_pairs.jsonl": pair_lines, "stimuli_singles.jsonl": single_lines}


def main() -> None:
    for name, lines in build().items():
        with open(RESOURCES / name, "w", encoding="utf-8") as fh:
            for line in lines:
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
        print(f"wrote {len(lines)} lines to {RESOURCES / name}")


if __name__ == "__main__":
    main()
