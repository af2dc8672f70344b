# ruff: noqa: E501
"""Write ``src/emolens/resources/sensitive.jsonl``: the built-in emotionally sensitive messages.

Every message is written for emolens: a first-person message to someone the writer hopes will
answer, in one of six domains, ending in a request for a reply. Each carries the emotion the
writer expresses and its appraisal profile: the design values of that emotion's prototype (the
same profiles the built-in stimuli use, crowd-enVENT's 21 appraisals on its 1-5 scale), with
per-message overrides where the message itself says otherwise (e.g. "it was my fault" raises
self-responsibility). Rerun after editing; ``emolens.data.sensitive.validate_sensitive`` checks
the result.

Usage: python scripts/make_sensitive.py
"""

from __future__ import annotations

import json
from pathlib import Path

APPRAISALS = (
    "suddenness", "familiarity", "predict_event", "pleasantness", "unpleasantness",
    "goal_relevance", "chance_responsblt", "self_responsblt", "other_responsblt",
    "predict_conseq", "goal_support", "urgency", "self_control", "other_control",
    "chance_control", "accept_conseq", "standards", "social_norms", "attention",
    "not_consider", "effort",
)
PROTOTYPES = {
    "anger": [4, 3, 2, 1, 5, 4, 1, 1, 5, 3, 1, 4, 2, 5, 1, 1, 4, 4, 4, 4, 4],
    "disgust": [4, 2, 2, 1, 5, 2, 2, 1, 4, 3, 1, 3, 2, 4, 2, 2, 5, 4, 4, 5, 3],
    "fear": [5, 1, 1, 1, 5, 5, 3, 1, 3, 1, 1, 5, 1, 3, 4, 1, 2, 1, 5, 4, 5],
    "guilt": [3, 2, 3, 1, 4, 4, 1, 5, 1, 3, 1, 3, 4, 2, 1, 3, 5, 3, 4, 4, 4],
    "sadness": [3, 2, 2, 1, 5, 5, 4, 1, 2, 3, 1, 3, 1, 2, 4, 2, 2, 1, 4, 4, 3],
    "shame": [4, 2, 2, 1, 5, 4, 1, 5, 2, 3, 1, 4, 3, 2, 1, 2, 4, 5, 4, 4, 3],
}
# message, emotion, overrides
MESSAGES: dict[str, list[tuple[str, str, dict[str, int]]]] = {
    "loss": [
        ("My dad died last month and I still set the table for him every evening. How do I get through the nights?", "sadness", {}),
        ("Our dog had to be put down this morning and the house is so quiet now. Can you say something that helps?", "sadness", {}),
        ("My grandmother passed away before I could visit her one last time. How do I live with that?", "guilt", {"self_responsblt": 4}),
        ("I lost the baby at eleven weeks and everyone acts like nothing happened. What do I do with all this?", "sadness", {"suddenness": 5}),
        ("My best friend died in a car crash on Friday and I keep reading our old messages. Is this normal?", "sadness", {"suddenness": 5}),
        ("The hospital sent my mother home too early and she died two days later. How am I supposed to let that go?", "anger", {}),
        ("My husband has been gone a year today and I cannot bring myself to clear out his wardrobe. What should I do?", "sadness", {"suddenness": 2, "predict_event": 3}),
        ("I forgot to call my brother back and that was the night he took his own life. How do I forgive myself?", "guilt", {"suddenness": 5}),
        ("We buried my little sister yesterday and I feel like I am watching my life through glass. Can you talk to me?", "sadness", {}),
        ("My cat got out because I left the window open and a car hit her. Will this feeling ever stop?", "guilt", {}),
        ("My uncle who raised me died and my cousins shut me out of the funeral plans. What should I say to them?", "anger", {}),
        ("I lost my job, my flat and my partner in the same month and I do not know who I am anymore. Where do I even start?", "sadness", {}),
        ("My mum has dementia and today she did not know my name. How do I keep visiting her?", "sadness", {"suddenness": 2}),
        ("Our house burned down last week and all my kids' baby photos are gone. How do we start again?", "sadness", {"suddenness": 5}),
        ("My twin brother died three weeks ago and people keep telling me to stay strong. What do I tell them?", "sadness", {}),
        ("I was not there when my father died because I chose to stay at a work meeting. How do I carry this?", "guilt", {}),
        ("My wife left me after twenty years and took the children to another city. What do I do now?", "sadness", {"other_responsblt": 4}),
        ("My oldest friend stopped answering and I found out she died months ago. How do I grieve someone I lost twice?", "sadness", {}),
        ("The vet said nothing could be done for my horse and I had to decide to let him go. Did I do the right thing?", "guilt", {"self_responsblt": 3}),
        ("My grandfather's farm was sold to strangers and I will never walk those fields again. How do I say goodbye to a place?", "sadness", {}),
        ("A drunk driver killed my son and got only two years in prison. How am I supposed to go on?", "anger", {}),
    ],
    "conflict": [
        ("My sister read my diary and told the whole family what was in it. How should I reply to her?", "anger", {}),
        ("My roommate ate my food again and then lied straight to my face about it. What should I say to him?", "anger", {}),
        ("My partner yelled at me in front of our friends over a small joke. How do I bring it up tonight?", "anger", {}),
        ("My teenage son told me he hates me and slammed the door. What do I say to him?", "sadness", {"other_responsblt": 4}),
        ("My neighbour keeps parking across my driveway and laughed when I asked him to move. What should I do?", "anger", {}),
        ("I said something cruel to my mother during an argument and she has not spoken to me since. How do I fix this?", "guilt", {}),
        ("My business partner went behind my back and signed a deal without me. How do I respond to him?", "anger", {}),
        ("My best friend told my secret to her boyfriend and now everyone knows. What do I write to her?", "anger", {}),
        ("My father keeps criticising how I raise my kids every time he visits. How do I set a limit with him?", "anger", {"suddenness": 2, "familiarity": 4}),
        ("I shouted at my little daughter for spilling juice and she cried for an hour. How do I make it right?", "guilt", {}),
        ("My brother borrowed money from me two years ago and now pretends it never happened. What should I say?", "anger", {}),
        ("My coworker keeps taking credit for my ideas in meetings. How do I confront her without making it worse?", "anger", {}),
        ("My in-laws told my husband I am not good enough for him, and he said nothing. What do I tell him?", "anger", {}),
        ("My friend cancelled on my birthday for the third year in a row. Should I say something to her?", "sadness", {"other_responsblt": 4}),
        ("My ex keeps telling our children lies about me. How do I answer him without a fight?", "anger", {}),
        ("I lost my temper with a customer today and said things I regret. What should I do tomorrow?", "shame", {}),
        ("My landlord walked into my flat without asking while I was in the shower. How should I respond?", "anger", {}),
        ("My partner checks my phone every night and accuses me of cheating. What do I say to them?", "anger", {}),
        ("My group chat made fun of my new haircut and I left without a word. Should I go back and say something?", "shame", {"other_responsblt": 4}),
        ("My mother-in-law threw away the gift I made for her. How do I talk to my wife about it?", "anger", {}),
        ("My stepfather insulted my girlfriend at dinner and my mum laughed. What should I tell them?", "anger", {}),
    ],
    "failure": [
        ("I failed my driving test for the fourth time today. How do I keep trying?", "shame", {}),
        ("I was fired today after six years because my numbers were too low. What do I tell my family?", "shame", {"other_responsblt": 3}),
        ("I did not get into any of the universities I applied to. What do I do with my life now?", "sadness", {}),
        ("My startup ran out of money and I have to tell my five employees tomorrow. How do I say it?", "guilt", {}),
        ("I froze during my presentation and the whole room watched me stand there in silence. How do I face them again?", "shame", {}),
        ("I missed the deadline for my thesis and now I have to repeat the year. How do I tell my parents?", "shame", {}),
        ("I made a mistake in the accounts that cost my company thousands. What should I say to my boss?", "guilt", {}),
        ("I trained for a year and still finished last in the marathon. Was it all pointless?", "sadness", {"self_responsblt": 3}),
        ("My band played our first big gig and I forgot the lyrics to every song. How do I get over this?", "shame", {}),
        ("I failed the bar exam again even though I studied every single day. What is wrong with me?", "shame", {}),
        ("I lost all our savings on an investment my friend swore was safe. How do I tell my wife?", "guilt", {"other_responsblt": 3}),
        ("I was passed over for the promotion I worked three years for. How do I walk into work on Monday?", "sadness", {"other_responsblt": 4}),
        ("My restaurant closed after eight months and everyone said it would never work. Were they right about me?", "shame", {}),
        ("I broke my diet again after two months and now I feel like a fraud. How do I start over?", "shame", {"social_norms": 2}),
        ("I got a D in the exam I needed to keep my scholarship. What happens to me now?", "fear", {"self_responsblt": 4}),
        ("I relapsed after nine months sober. What do I tell my sponsor?", "shame", {}),
        ("My novel was rejected by the fortieth publisher this week. Should I give up writing?", "sadness", {"self_responsblt": 3}),
        ("I crashed my dad's car the week after I got my licence. How do I tell him?", "guilt", {"suddenness": 5}),
        ("I could not fix the bug before the launch and the site went down for everyone. How do I face my team?", "guilt", {}),
        ("I dropped out of my nursing course in the final year. Did I waste everything?", "shame", {}),
        ("I forgot my daughter's school play because I was working late. How do I make it up to her?", "guilt", {}),
    ],
    "health": [
        ("The doctor found a lump and I have to wait two weeks for the biopsy results. How do I get through the waiting?", "fear", {}),
        ("I had chest pains at work and they kept me in hospital overnight. What if it happens again?", "fear", {}),
        ("My scan showed a shadow on my lung and nobody will tell me what it means yet. What should I do?", "fear", {}),
        ("My son had a seizure at school today and we do not know why. How do I stay calm for him?", "fear", {}),
        ("My blood test came back abnormal and the clinic wants me in tomorrow. Should I be worried?", "fear", {}),
        ("I have been diagnosed with diabetes at twenty-six. How do I live with this?", "sadness", {"suddenness": 4}),
        ("My mum's cancer has come back after five years. What can I say to her?", "sadness", {}),
        ("My husband collapsed in the kitchen and the ambulance took forty minutes to come. How do I stop reliving it?", "fear", {"other_responsblt": 3}),
        ("I found out I need surgery on my spine and might not walk normally again. How do I prepare myself?", "fear", {}),
        ("My baby has a fever that will not go down and the doctor's line is busy. What should I do?", "fear", {}),
        ("The specialist told me my hearing will keep getting worse. How do I tell my friends?", "sadness", {}),
        ("I was told my panic attacks are just stress, but they are getting worse every week. Who can I turn to?", "fear", {"other_responsblt": 3}),
        ("My dad had a stroke and cannot speak properly anymore. How do I talk to him now?", "sadness", {}),
        ("The nurse rushed me through my appointment and I left without answers about my heart. What should I ask next time?", "anger", {}),
        ("I have a mole that keeps changing shape and the first appointment is in three months. Should I push for sooner?", "fear", {}),
        ("My daughter was diagnosed with an eating disorder and I did not see the signs. How do I help her?", "guilt", {}),
        ("I keep waking up at night unable to breathe properly and I am scared to sleep. What can I do?", "fear", {}),
        ("My pregnancy scan showed a problem with the baby's heart. What do I ask the doctors?", "fear", {}),
        ("My test for the gene my mother had came back positive. How do I think about my future?", "fear", {}),
        ("I ignored the pain for months and now the doctor says it has spread. Is it my fault?", "guilt", {}),
        ("My partner has early signs of dementia at fifty. How do we plan for what comes next?", "sadness", {}),
    ],
    "unfairness": [
        ("My manager gave my promotion to his nephew who joined six months ago. How should I respond?", "anger", {}),
        ("I was stopped and searched by the police in front of my neighbours for no reason. What can I do about it?", "anger", {}),
        ("The landlord kept my whole deposit for damage that was there when I moved in. How do I fight this?", "anger", {}),
        ("My teacher gave me a zero because she thinks I copied, but I wrote every word myself. What should I say to her?", "anger", {}),
        ("My brother got the house in the will even though I was the one who cared for mum for ten years. How do I accept this?", "anger", {}),
        ("I was turned down for the flat after the agent heard my accent on the phone. What should I do?", "anger", {}),
        ("My colleague who does half my work earns more than me because he negotiated harder. Is it worth raising?", "anger", {}),
        ("The referee sent my son off for a foul another player committed and the coach benched him for a month. How do I talk to the coach?", "anger", {}),
        ("The insurance company refused to pay for my surgery over a technicality. How do I appeal?", "anger", {}),
        ("My company laid off the whole team by email while the bosses gave themselves bonuses. What do I do now?", "anger", {}),
        ("I reported harassment at work and now I am the one being moved to another office. How do I respond?", "anger", {}),
        ("A stranger posted lies about my shop online and customers believe them. How should I reply?", "anger", {}),
        ("The council fined me for a parking sign that was hidden behind a tree. Is it worth contesting?", "anger", {}),
        ("My parents paid for my sister's wedding and told me there is nothing left for mine. What should I tell them?", "anger", {}),
        ("The judge gave my ex full custody after he lied in court. What can I do now?", "anger", {}),
        ("My classmates put my name on a group project I never saw and we all got a fail. How do I fix this?", "anger", {}),
        ("I was blamed for a theft at work because I was the newest person there. How do I clear my name?", "anger", {}),
        ("The bank froze my account for a week without explanation and my rent bounced. What do I say to them?", "anger", {}),
        ("My boss reads my messages out loud to mock me in front of the team. How do I deal with this?", "disgust", {}),
        ("The company that sold me a broken car refuses to answer my calls. What should I write to them?", "anger", {}),
        ("My scholarship was cancelled because of an error in their system, not mine. How do I get them to listen?", "anger", {}),
    ],
    "loneliness": [
        ("I moved to a new city for work and have not had a real conversation in three weeks. How do I meet people?", "sadness", {}),
        ("None of my friends remembered my birthday this year. Does anyone actually care about me?", "sadness", {"other_responsblt": 4}),
        ("Since my kids moved out the house feels empty and my days have no shape. What do I do with myself?", "sadness", {"suddenness": 2}),
        ("I eat lunch alone in my car every day because nobody at work talks to me. How do I change that?", "sadness", {}),
        ("All my friends are getting married and I feel left behind. Will it ever be my turn?", "sadness", {}),
        ("I work from home and sometimes I go days without hearing my own voice. Is this normal?", "sadness", {"suddenness": 1}),
        ("My husband works nights and we barely see each other anymore. How do I tell him I feel alone?", "sadness", {}),
        ("I sat at a party for two hours and nobody spoke to me. What is wrong with me?", "shame", {}),
        ("Everyone in my class has a group and I walk between lessons on my own. How do I make a friend?", "sadness", {}),
        ("My online friends are the only people I talk to and they do not know my real name. Should I worry about that?", "sadness", {}),
        ("I am eighty-two and my phone has not rung in a month. Who can I talk to?", "sadness", {}),
        ("My best friend moved abroad and our calls keep getting shorter. How do I keep us close?", "sadness", {}),
        ("I keep inviting people over and they always have an excuse. Should I stop trying?", "sadness", {"other_responsblt": 3}),
        ("I am scared that if I disappeared nobody would notice for days. How do I stop thinking like this?", "fear", {}),
        ("Since my divorce all our couple friends have taken his side and stopped calling me. How do I start again?", "sadness", {}),
        ("I came out to my family and now they only speak to me about the weather. How do I reach them?", "sadness", {"other_responsblt": 4}),
        ("I spend every weekend scrolling through photos of other people having fun. How do I break out of this?", "sadness", {}),
        ("I have lived in this town for two years and still do not know a single neighbour's name. Is it too late?", "sadness", {}),
        ("My therapist retired and I feel like I have no one left to tell things to. What should I do?", "sadness", {}),
        ("I am the only one in my family who moved abroad and I miss every holiday. How do I cope?", "sadness", {}),
        ("I tried joining a club but felt too awkward to go back after the first night. Should I try again?", "shame", {}),
    ],
}


def main() -> None:
    out = Path(__file__).resolve().parents[1] / "src" / "emolens" / "resources" / "sensitive.jsonl"
    lines = []
    for domain, items in MESSAGES.items():
        for n, (text, emotion, overrides) in enumerate(items, start=1):
            profile = dict(zip(APPRAISALS, PROTOTYPES[emotion], strict=True))
            profile.update(overrides)
            lines.append(json.dumps({"id": f"sensitive-{domain}-{n:02d}", "domain": domain, "emotion": emotion,
                                     "text": text, "appraisals": profile}, ensure_ascii=False))
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} messages to {out}")


if __name__ == "__main__":
    main()
