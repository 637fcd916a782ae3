"""Hard texts for the minilm-l6 quality gate: what agents send that the builder's templated
sentences are not (pure Python, deterministic, no downloads).

Kinds: very short replies and single tokens, punctuation only, emoji (alone, in sequences, mixed
with words), at least nine scripts (Latin with accents, Cyrillic, Greek, Arabic, Hebrew,
Devanagari, Thai, Chinese, Japanese, Korean), code (Python, SQL, JavaScript, shell, JSON, regular
expressions, stack traces), URLs, e-mail addresses, paths and identifiers, log lines (syslog,
access logs, JSON logs, Kubernetes events), code-switched text, and texts longer than the
256-token context (so truncation is part of what is gated).

Texts are composed at random from these pools, so a seed gives a set of its own: the build gates
on one seed and calibrates static quantization on texts drawn with another; a check on texts
never seen is one more seed away (``hard_texts(seed=...)``).
"""

from __future__ import annotations

import random
from collections.abc import Callable

SHORT = ["ok", "k", "yes", "no", "y", "n", "ty", "thx", "np", "lgtm", "+1", "-1", "sure", "nope",
         "done", "wip", "asap", "brb", "idk", "tbh", "why", "how?", "when", "where", "hi", "yo",
         "42", "0", "7", "100%", "3.5", "-1.0e-3", "v2", "2024", "12:30", "N/A", "null", "true",
         "TODO", "FIXME", "pls", "help", "stop", "ping", "pong", "a", "I", "x", "Q3", "€5",
         "refund", "cancel", "urgent", "bug", "login", "sev1", "OK!", "No.", "Yes?", "meh"]
PUNCT = ["?", "!", ".", "...", "?!", "!!!", "???", "—", "–", "-", "_", "*", "***", "#", "##",
         "@", "&", "%", "$", "^", "~", "`", "```", "()", "[]", "{}", "<>", "//", "\\\\", "|",
         ":", ";", ":)", ":(", ";-)", ":-D", "<3", "^_^", "¯\\_(ツ)_/¯", "…", "«»", "¿?", "¡!",
         "、。", "！？", "•", "§", "¶", "°", "±", "→", "⇒", "✓", "✗", "==", "!=", "->", "=>"]
EMOJI = ["🙂", "😂", "😭", "🙏", "👍", "👎", "🔥", "🚀", "❤️", "💔", "🎉", "🤔", "😅", "🙃",
         "👀", "✅", "❌", "⚠️", "💯", "🤷", "🤦‍♂️", "👩‍💻", "🧑🏽‍🔧", "🇫🇷", "🇯🇵", "🏳️‍🌈",
         "☕", "🍕", "🐛", "📉", "📈", "💸", "🔒", "⏰", "🌧️", "☀️"]
WORDS = ["thanks", "deploy", "fixed", "broken again", "love it", "ship it", "so slow",
         "great job", "call me", "payment failed", "see you", "on my way", "happy friday",
         "server down", "merged", "lunch?", "good morning", "the build", "customer is angry"]
SCRIPTS = {
    "latin_accents": ["Où est la gare, s'il vous plaît ?", "Ça coûte combien, cette crème brûlée ?",
                      "¿Dónde está el baño? Necesito ayuda, por favor.",
                      "Über die Brücke fährt ein großer Lastwagen.",
                      "Zażółć gęślą jaźń — pójdź w różę.", "Tiếng Việt có dấu rất khó gõ.",
                      "Çok teşekkür ederim, görüşürüz!", "São Paulo é a maior cidade do Brasil.",
                      "Jeg kan ikke finde min nøgle på kontoret.", "Hvězdy září nad Prahou."],
    "cyrillic": ["Привет! Как дела?", "Не могу войти в личный кабинет.",
                 "Спасибо за быструю доставку.", "Сервер упал сегодня ночью.",
                 "Добрий вечір, ми з України.", "Здравей, къде е гарата?",
                 "Пожалуйста, верните деньги за заказ."],
    "greek": ["Καλημέρα σας!", "Πού είναι ο σταθμός;", "Ευχαριστώ πολύ για τη βοήθεια.",
              "Η παραγγελία μου δεν έφτασε ακόμα."],
    "arabic": ["مرحبا، كيف حالك؟", "لا أستطيع تسجيل الدخول إلى حسابي.", "شكرا جزيلا لك",
               "متى يصل الطلب؟", "السلام عليكم ورحمة الله"],
    "hebrew": ["שלום, מה שלומך?", "ההזמנה שלי לא הגיעה.", "תודה רבה!"],
    "devanagari": ["नमस्ते, आप कैसे हैं?", "मेरा पासवर्ड काम नहीं कर रहा है।", "बहुत धन्यवाद!",
                   "कृपया मेरा ऑर्डर रद्द करें।"],
    "thai": ["สวัสดีครับ", "ขอบคุณมากค่ะ", "ฉันเข้าสู่ระบบไม่ได้"],
    "chinese": ["你好，请问火车站在哪里？", "我的订单还没有到。", "谢谢你的帮助！",
                "服务器又宕机了", "请帮我重置密码。", "今天天气很好。"],
    "japanese": ["こんにちは、お元気ですか？", "ログインできません。", "ありがとうございます！",
                 "東京駅はどこですか。", "カタカナとひらがなと漢字。"],
    "korean": ["안녕하세요, 잘 지내세요?", "비밀번호를 잊어버렸어요.", "감사합니다!",
               "주문이 아직 도착하지 않았어요."],
}
CODE = ["def add(a, b):\n    return a + b", "for i in range(10): print(i ** 2)",
        "SELECT id, email FROM users WHERE created_at > now() - interval '1 day';",
        "UPDATE jobs SET status = 'failed' WHERE attempts >= 3 RETURNING job_id;",
        "const x = await fetch(`/api/v1/items?id=${id}`).then(r => r.json());",
        "if (!user) { throw new Error('not found'); }", "git rebase -i HEAD~3 && git push -f",
        "kubectl get pods -n prod | grep CrashLoopBackOff",
        "docker run --rm -it -p 8080:80 nginx:1.27", "curl -sS -X POST -H 'Content-Type: "
        "application/json' -d '{\"a\":1}' localhost:8000/run",
        '{"user_id": 1234, "items": [1, 2, 3], "ok": true, "price": 9.99}',
        "^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}$", "x = [i for i in xs if i % 2 == 0]",
        "Traceback (most recent call last):\n  File \"app.py\", line 12, in <module>\n"
        "ZeroDivisionError: division by zero",
        "java.lang.NullPointerException\n\tat com.acme.Billing.charge(Billing.java:88)",
        "#include <stdio.h>\nint main(void) { printf(\"hi\\n\"); return 0; }",
        "fn main() { let v: Vec<u32> = (0..10).collect(); println!(\"{:?}\", v); }",
        "SELECT count(*) FILTER (WHERE status = 'ok') / count(*)::float FROM t GROUP BY 1;"]
URLS = ["https://example.com/path/to/page?utm_source=mail&id=42#section-3",
        "http://localhost:8080/api/v2/users/7f9c2b1e-2d4a-4c7e-9a55-0d2f5f1e9b10",
        "www.acme.io/pricing", "ftp://files.example.org/pub/data_2024-01-01.tar.gz",
        "https://docs.python.org/3/library/asyncio-task.html#asyncio.gather",
        "s3://bucket-name/logs/2024/05/17/part-0001.parquet", "mailto:support@acme.com",
        "jane.doe+billing@example.co.uk", "/var/log/nginx/access.log.1",
        "C:\\Users\\Admin\\AppData\\Local\\Temp\\report.xlsx", "192.168.0.1:5432",
        "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "7f9c2b1e-2d4a-4c7e-9a55-0d2f5f1e9b10", "+1 (555) 010-9999", "ORD-2024-000917"]
LOGS = ["2024-05-17T12:03:44.123Z ERROR [billing] charge failed: card_declined user=8812",
        "May 17 12:03:44 web-3 sshd[2211]: Failed password for root from 203.0.113.7 port 52144",
        '203.0.113.9 - - [17/May/2024:12:03:44 +0000] "GET /api/items?page=2 HTTP/1.1" 500 1234',
        '{"level":"warn","ts":1715947424.12,"msg":"retrying","attempt":3,"err":"timeout"}',
        "W0517 12:03:44.000 1 reflector.go:324] failed to list *v1.Pod: context deadline",
        "[2024-05-17 12:03:44,123] INFO celery.worker: Task run_batch[ab12] succeeded in 0.04s",
        "kernel: Out of memory: Killed process 4242 (python) total-vm:8123456kB",
        "Warning  BackOff  3m (x12 over 10m)  kubelet  Back-off restarting failed container",
        "E: Unable to locate package libfoo-dev", "FATAL:  password authentication failed"]
MIXED = ["pls fix the 登录 bug asap 🙏", "merci for the quick fix 👍", "el deploy falló otra vez",
         "оплата не прошла, error 402", "ok ok ok ok", "aaaaaaaaaaaaaaaaaaaa", "zzzz...",
         "HELLO??? IS ANYONE THERE???", "lol 😂😂😂 that's hilarious", "2+2=4", "a, b, c, d",
         "¿qué? what? 什么？", "ping 8.8.8.8 -c 3", "user@host:~$ ls -la"]


def _pick(rng: random.Random, pool: list[str], k: int) -> list[str]:
    return [rng.choice(pool) for _ in range(k)]


def _short(rng: random.Random) -> str:
    return rng.choice([rng.choice(SHORT), rng.choice(SHORT).upper(), rng.choice(SHORT) + "?",
                       rng.choice(SHORT) + " " + rng.choice(SHORT)])


def _punct(rng: random.Random) -> str:
    return "".join(_pick(rng, PUNCT, rng.choice([1, 1, 2, 3])))


def _emoji(rng: random.Random) -> str:
    n = rng.choice([1, 1, 2, 3, 5])
    return rng.choice(["".join(_pick(rng, EMOJI, n)), f"{rng.choice(WORDS)} {rng.choice(EMOJI)}",
                       f"{rng.choice(EMOJI)} {rng.choice(WORDS)} {rng.choice(EMOJI)}"])


def _script(rng: random.Random) -> str:
    script = rng.choice(sorted(SCRIPTS))
    pool = SCRIPTS[script]
    return " ".join(_pick(rng, pool, rng.choice([1, 1, 2])))


def _code(rng: random.Random) -> str:
    return "\n".join(_pick(rng, CODE, rng.choice([1, 1, 2])))


def _url(rng: random.Random) -> str:
    url = rng.choice(URLS)
    return rng.choice([url, f"see {url}", f"{url} is down", f"{url} {rng.choice(URLS)}"])


def _log(rng: random.Random) -> str:
    return "\n".join(_pick(rng, LOGS, rng.choice([1, 1, 2, 3])))


def _mixed(rng: random.Random) -> str:
    return rng.choice(MIXED)


def _long(rng: random.Random) -> str:
    """Over 256 tokens: a long ticket, a log dump, a code file, or a multilingual thread."""
    kind = rng.randrange(4)
    if kind == 0:
        parts = _pick(rng, WORDS + MIXED + [_script(rng) for _ in range(6)], 60)
    elif kind == 1:
        parts = _pick(rng, LOGS, 16)
    elif kind == 2:
        parts = _pick(rng, CODE, 14)
    else:
        parts = [_script(rng) for _ in range(40)]
    return ("\n" if kind in (1, 2) else " ").join(parts)


KINDS: dict[str, tuple[Callable[[random.Random], str], int]] = {
    # kind: (generator, texts per set)
    "short": (_short, 40), "punct": (_punct, 30), "emoji": (_emoji, 30), "script": (_script, 60),
    "code": (_code, 30), "url": (_url, 25), "log": (_log, 30), "mixed": (_mixed, 15),
    "long": (_long, 24),
}


def hard_texts(seed: int = 7, scale: float = 1.0) -> tuple[list[str], list[str]]:
    """``(texts, kinds)``: about 280 x ``scale`` distinct hard texts drawn with ``seed``."""
    rng = random.Random(seed)
    texts: list[str] = []
    kinds: list[str] = []
    seen: set[str] = set()
    for kind, (make, n) in KINDS.items():
        want, tries = max(1, round(n * scale)), 0
        got = 0
        while got < want and tries < 20 * want:
            tries += 1
            text = make(rng)
            if text in seen:
                continue
            seen.add(text)
            texts.append(text)
            kinds.append(kind)
            got += 1
    return texts, kinds
