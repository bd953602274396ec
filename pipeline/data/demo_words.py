"""The demo corpus's vocabulary: its films (quality prior, size, release, people) and the
per-star fragments reviews are built from (verdicts, aspect clauses, intensifiers, negations,
sarcasm, emoji, English). Data, not logic: :mod:`pipeline.data.demo` combines them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class DemoFilm:
    """One film of the demo and what shapes its reviews."""

    cn: str
    en: str
    release: date
    weight: float  # share of the corpus; 0 marks the small film (SMALL_FILM_SHARE)
    star_prior: tuple[float, float, float, float, float]  # P(star 1..5)
    people: tuple[str, ...]  # actors and characters reviewers name
    context: tuple[str, ...]  # sentiment-free, film-specific remarks

    @property
    def mean_star(self) -> float:
        return sum(star * p for star, p in zip(range(1, 6), self.star_prior, strict=True))


SMALL_FILM_SHARE = 0.0025  # ~15 of 6,000 reviews
FILMS = (
    DemoFilm("钢铁侠1", "Iron Man", date(2008, 4, 30), 0.15, (0.03, 0.05, 0.20, 0.40, 0.32),
             ("唐尼", "小罗伯特·唐尼", "托尼", "小辣椒"),
             ("重温了一遍漫威宇宙的开端", "当年错过了，这次补上", "小时候看过的超级英雄电影")),
    DemoFilm("何以笙箫默", "My Sunshine", date(2015, 4, 30), 0.15, (0.45, 0.20, 0.17, 0.11, 0.07),
             ("黄晓明", "杨幂", "Angelababy", "何以琛"),
             ("原著党来打分", "电视剧版看过了，来看电影版", "冲着原著去的")),
    DemoFilm("大鱼海棠", "Big Fish & Begonia", date(2016, 7, 8), 0.10,
             (0.13, 0.17, 0.30, 0.25, 0.15), ("椿", "湫", "鲲"),
             ("等了十二年的国产动画", "国漫加油", "带着期待去的")),
    DemoFilm("美人鱼", "The Mermaid", date(2016, 2, 8), 0.09, (0.18, 0.18, 0.28, 0.22, 0.14),
             ("周星驰", "邓超", "林允", "罗志祥"),
             ("春节档和家人一起看的", "星爷的电影必须去电影院", "大年初一看的")),
    DemoFilm("寻龙诀", "Mojin: The Lost Legend", date(2015, 12, 18), 0.10,
             (0.06, 0.12, 0.32, 0.33, 0.17), ("陈坤", "黄渤", "舒淇", "杨颖"),
             ("鬼吹灯粉来报到", "看过原著小说", "第一次看盗墓题材")),
    DemoFilm("西游记之大圣归来", "Monkey King: Hero Is Back", date(2015, 7, 10), 0.10,
             (0.04, 0.06, 0.18, 0.37, 0.35), ("大圣", "江流儿", "猪八戒"),
             ("国产动画来支持一下", "带小侄子去看的", "自来水来了")),
    DemoFilm("夏洛特烦恼", "Goodbye Mr. Loser", date(2015, 9, 30), 0.10,
             (0.07, 0.10, 0.28, 0.33, 0.22), ("沈腾", "马丽", "艾伦"),
             ("开心麻花的话剧版看过", "国庆档看的", "全场都在笑")),
    DemoFilm("小时代4", "Tiny Times 4", date(2015, 7, 9), 0.08, (0.55, 0.18, 0.13, 0.08, 0.06),
             ("杨幂", "郭采洁", "柯震东", "郭敬明"),
             ("陪闺蜜去看的", "系列终于完结了", "前三部都看了")),
    DemoFilm("疯狂动物城", "Zootopia", date(2016, 3, 4), 0.125, (0.01, 0.02, 0.08, 0.32, 0.57),
             ("朱迪", "尼克", "树懒闪电"),
             ("迪士尼出品", "带孩子去看的", "和全家一起看的")),
    DemoFilm("后会无期", "The Continent", date(2014, 7, 24), 0.0, (0.15, 0.18, 0.30, 0.24, 0.13),
             ("冯绍峰", "陈柏霖", "钟汉良", "韩寒"),
             ("韩寒的第一部电影", "冲着主题曲去的", "在路上用手机看的")),
)  # fmt: skip

# --- wording -----------------------------------------------------------------------------------
# aspect -> (positive adjectives, negative adjectives); clauses read "<aspect><intensifier><adj>"
ASPECTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "特效": (("震撼", "逼真", "炫酷", "良心", "精良"), ("五毛", "假", "粗糙", "廉价", "敷衍")),
    "剧情": (("精彩", "紧凑", "感人", "流畅", "有深度"), ("狗血", "混乱", "无聊", "老套", "弱智")),
    "配乐": (("好听", "动人", "燃", "出彩", "贴切"), ("吵", "违和", "难听", "突兀", "平淡")),
    "节奏": (("紧凑", "流畅", "明快", "舒服"), ("拖沓", "混乱", "慢", "松散", "跳跃")),
    "演技": (("精湛", "在线", "自然", "出色", "到位"), ("尴尬", "浮夸", "生硬", "做作", "僵硬")),
    "画面": (("美", "精致", "惊艳", "唯美", "用心"), ("粗糙", "廉价", "昏暗", "杂乱", "土")),
    "台词": (("有趣", "走心", "精彩", "接地气", "犀利"), ("尴尬", "矫情", "中二", "生硬", "肉麻")),
    "笑点": (("密集", "自然", "好笑", "高级"), ("尴尬", "低俗", "刻意", "冷", "老套")),
    "结局": (("感人", "圆满", "意外", "震撼", "温暖"), ("仓促", "敷衍", "烂尾", "突兀", "潦草")),
    "人设": (("饱满", "可爱", "立体", "讨喜", "鲜明"), ("单薄", "脸谱化", "讨厌", "扁平", "崩塌")),
}
PERSON_ADJECTIVES = (
    ("帅", "可爱", "有灵气", "出彩", "自然", "有魅力"),
    ("面瘫", "做作", "出戏", "尴尬", "浮夸", "木"),
)
INTENSIFIERS = {
    5: ("非常", "太", "超级", "特别", "超", "真的很", "极其", "相当"),
    4: ("挺", "还挺", "蛮", "比较", "很", "还算", "算是"),
    2: ("有点", "略", "略显", "稍微有点", "有些", "比较"),
    1: ("太", "非常", "极其", "特别", "真的很", "简直", "超级"),
}
NEGATIONS = {  # "<aspect><negation><adj>": negating the opposite polarity
    5: ("一点都不", "完全不", "丝毫不"),  # + negative adjective
    4: ("并不", "没那么", "不算"),  # + negative adjective
    2: ("不太", "并不", "没有想象中", "没那么"),  # + positive adjective
    1: ("一点都不", "完全不", "根本不"),  # + positive adjective
}
MIDDLING = ("还行", "一般", "一般般", "中规中矩", "马马虎虎", "还可以", "凑合", "及格", "不好不坏",
            "没什么亮点", "平平")  # fmt: skip
VERDICTS = {
    5: ("神作", "太好看了", "强烈推荐", "五星好评", "满分", "必须五星", "年度最佳", "完美",
        "看哭了", "良心之作", "二刷预定", "百看不厌", "好看到爆", "无可挑剔", "经典中的经典"),
    4: ("挺好看的", "值得一看", "还不错", "不错", "四星", "蛮好看的", "推荐", "瑕不掩瑜",
        "比预期好", "可以一看", "总体满意", "好看", "值回票价", "有惊喜"),
    3: ("还行", "一般般", "中规中矩", "马马虎虎", "三星", "凑合", "及格吧", "不好不坏",
        "打发时间还行", "看看也行", "有好有坏", "没什么感觉", "平平淡淡", "三星半"),
    2: ("失望", "不太好看", "没有想象中好", "有点无聊", "两星", "略失望", "可惜了", "不推荐",
        "差点意思", "浪费了好题材", "看得有点困", "不值票价", "不如预期", "一般偏下"),
    1: ("烂片", "垃圾", "太烂了", "一星都嫌多", "浪费钱", "难看死了", "负分", "史上最烂",
        "看到一半就走了", "睡着了", "辣眼睛", "退钱", "侮辱智商", "烂到家了", "不好看"),
}  # fmt: skip
TINY = {  # whole reviews of one to three characters
    5: ("好看", "神作", "满分", "超赞", "爱了", "五星", "绝了"),
    4: ("不错", "挺好", "推荐", "好看", "还好", "可以"),
    3: ("还行", "一般", "凑合", "还好", "及格", "三星"),
    2: ("失望", "一般", "无聊", "不行", "难看"),
    1: ("烂", "垃圾", "难看", "烂片", "呵呵", "无语", "差"),
}
ENGLISH = {
    5: ("amazing!", "so good", "perfect", "love it", "10/10", "masterpiece", "awesome"),
    4: ("nice", "not bad", "pretty good", "good movie", "worth watching"),
    3: ("so so", "just ok", "meh", "average", "nothing special"),
    2: ("disappointed", "a bit boring", "not good", "overrated"),
    1: ("so boring", "terrible", "waste of time", "what the hell", "worst movie ever"),
}
ENGLISH_ASPECTS = ("plot", "story", "acting", "BGM", "ending", "特效", "剧情")
ENGLISH_ADJECTIVES = {
    5: ("amazing", "perfect", "awesome"),
    4: ("nice", "good", "fine"),
    3: ("ok", "so so", "average"),
    2: ("weak", "boring", "meh"),
    1: ("terrible", "awful", "bad"),
}
ENGLISH_INTENSIFIERS = ("很", "太", "so", "really", "有点")
EMOJI = {
    5: ("👍", "❤️", "😍", "👏", "🎉"),
    4: ("👍", "😊", "🙂"),
    3: ("🤔", "😐", "🙂"),
    2: ("😒", "🙄", "😴"),
    1: ("😡", "👎", "💩", "🙄"),
}
LAUGH = "😂"  # every star uses it: laughing with the film or at it
SARCASM = (
    "呵呵，真是好棒棒的烂片", "好看到我提前离场了", '这演技真是"精湛"呢',
    "感谢导演让我知道什么叫烂片", "年度最佳催眠片", "太好看了，看得我都睡着了呵呵",
    "五颗星都给导演的勇气", '真是一部"神作"啊', "编剧真是个天才呢", "钱花得真值呢呵呵",
)  # fmt: skip
NEUTRAL = (
    "和朋友一起去看的", "周末在家看的", "带爸妈去看的", "陪女朋友去看的", "在飞机上看的",
    "首映场看的", "二刷", "电影院里人很多", "看的IMAX 3D", "早场只有我一个人", "看完已经凌晨了",
    "下班后去看的", "团购的票", "原著党表示", "排了很久的队", "和室友一起看的", "记录一下",
)  # fmt: skip
PERSON_NEUTRAL = ("冲着{}去看的", "因为{}才买的票", "{}粉来了")
STORY = {  # longer sentences that give long reviews their body
    5: ("看完之后久久不能平静，走出影院的时候眼眶还是湿的",
        "每一帧都可以截下来当壁纸，看得出制作团队的诚意",
        "很久没有在电影院里这么投入了，结束时全场观众一起鼓掌",
        "细节经得起推敲，二刷的时候发现了很多彩蛋", "这才是我心目中电影该有的样子"),
    4: ("虽然有些地方处理得有点仓促，但瑕不掩瑜", "整体完成度很高，看得出是用心拍的",
        "作为商业片来说已经很合格了", "比我预期的要好不少，没有白花票钱",
        "中间有一段稍微有点闷，后半段很精彩"),
    3: ("看的时候觉得还行，看完也就忘了", "有几个片段挺有意思的，但整体没什么记忆点",
        "不算难看，也说不上好看", "如果是在家看应该会更宽容一些", "优点和缺点都很明显"),
    2: ("期待了很久，结果有点失望", "前半段还可以，后半段越来越拖", "很多情节都经不起推敲",
        "看得出想表达点什么，但是没讲清楚", "宣传的时候说得太好了，落差有点大"),
    1: ("全程尴尬到脚趾抠地，好几次想离场", "完全不知道导演想表达什么",
        "周围好几个人看到一半就走了", "这种电影能上映真是国产片的悲哀", "浪费了两个小时的生命"),
}  # fmt: skip
SUMMINGS_UP = ("总之，", "总的来说，", "一句话：", "最后，", "")
CONTRASTS = ("但是", "不过", "可惜", "就是", "只是")
SEPARATORS = (("，", 10), (" ", 3), ("。", 2), ("！", 1), ("～", 1), (",", 1))
ENDINGS = (("", 8), ("。", 3), ("！", 3), ("！！！", 1), ("～", 1), ("…", 1), ("...", 1))
SENTENCE_ENDS = ("。", "。", "！", "～", "…")
SHAPES = (("tiny", 12), ("short", 45), ("medium", 33), ("long", 10))
SYLLABLES = (
    "xiao", "ming", "li", "wang", "zhang", "yu", "chen", "lin", "hao", "jia", "mei", "long",
    "fei", "tian", "yun", "xin", "yang", "bai", "feng", "qing", "shan", "an", "bo", "dong",
    "hua", "jun", "kai", "lei", "nan", "ping", "rui", "song", "ting", "wei", "xue", "yan",
)  # fmt: skip
HANDLE_SUFFIXES = ("cat", "sky", "moon", "fish", "xx", "yy", "kk")
