//! Static tables the simulator draws from: categories, brands, cities, names, browsers, campaigns.
//!
//! Everything here is fictional. Domains are reserved example domains, phone numbers are either in the
//! fictional `555-01xx` range (North America) or random, street names are made up.

/// One sub-category: its name, nouns used to build product titles, and a price multiplier relative to the
/// category median.
pub(crate) struct SubCategory {
    pub name: &'static str,
    pub code: &'static str,
    pub nouns: &'static [&'static str],
    pub price_mult: f64,
}

/// One top-level category with its price band (log-normal in USD) and the brands that sell in it.
pub(crate) struct CategoryDef {
    pub name: &'static str,
    pub handle: &'static str,
    pub code: &'static str,
    pub subs: &'static [SubCategory],
    /// Median price in USD; prices are `median * sub.price_mult * exp(sigma * N(0,1))`.
    pub median_usd: f64,
    pub sigma: f64,
    /// Replenishment cycle in days for consumables (re-bought), `None` for durable goods.
    pub cycle_days: Option<f64>,
    /// Indices into [`BRANDS`].
    pub brands: &'static [usize],
    /// Descriptors used in titles (materials, roasts, scents...).
    pub descriptors: &'static [&'static str],
    /// Extra tags some products of the category carry.
    pub tags: &'static [&'static str],
}

pub(crate) const BRANDS: [&str; 20] = [
    "Kinari",            // 0 apparel
    "Northfold",         // 1 apparel, outdoor
    "Haruka Studio",     // 2 apparel, accessories
    "Tidewell",          // 3 shoes
    "Ashgrove",          // 4 shoes, bags
    "Sumi & Co.",        // 5 accessories, home
    "Lumen Goods",       // 6 home
    "Cedar Lane",        // 7 home, bags
    "Fog City Roasters", // 8 coffee
    "Kumo Coffee",       // 9 coffee
    "Hinoki Skin",       // 10 skincare
    "Yuzu Lab",          // 11 skincare
    "Aozora",            // 12 skincare, accessories
    "Pale Harbor",       // 13 bags
    "Wildroot",          // 14 outdoor
    "Ironbark",          // 15 outdoor, shoes
    "Stonepath",         // 16 shoes, outdoor
    "Hollow Pine",       // 17 home, coffee
    "Brightwater",       // 18 apparel, skincare
    "Mori Works",        // 19 bags, accessories
];

pub(crate) const CATEGORIES: [CategoryDef; 8] = [
    CategoryDef {
        name: "Apparel",
        handle: "apparel",
        code: "APP",
        subs: &[
            SubCategory { name: "T-Shirts", code: "TEE", nouns: &["Tee", "Crew Tee", "Pocket Tee"], price_mult: 0.6 },
            SubCategory {
                name: "Sweaters",
                code: "SWT",
                nouns: &["Sweater", "Cardigan", "Knit Pullover"],
                price_mult: 1.6,
            },
            SubCategory { name: "Pants", code: "PNT", nouns: &["Chinos", "Wide Pants", "Joggers"], price_mult: 1.3 },
            SubCategory {
                name: "Dresses",
                code: "DRS",
                nouns: &["Dress", "Shirt Dress", "Slip Dress"],
                price_mult: 1.5,
            },
            SubCategory {
                name: "Jackets",
                code: "JKT",
                nouns: &["Jacket", "Chore Coat", "Overshirt"],
                price_mult: 2.4,
            },
        ],
        median_usd: 45.0,
        sigma: 0.35,
        cycle_days: None,
        brands: &[0, 1, 2, 18],
        descriptors: &[
            "Organic Cotton",
            "Merino",
            "Linen",
            "Heavyweight",
            "Relaxed",
            "Indigo",
            "Heather Grey",
            "Oatmeal",
        ],
        tags: &["organic", "unisex", "relaxed-fit", "made-in-japan"],
    },
    CategoryDef {
        name: "Shoes",
        handle: "shoes",
        code: "SHO",
        subs: &[
            SubCategory {
                name: "Sneakers",
                code: "SNK",
                nouns: &["Sneaker", "Court Sneaker", "Runner"],
                price_mult: 1.0,
            },
            SubCategory {
                name: "Boots",
                code: "BOT",
                nouns: &["Chelsea Boot", "Work Boot", "Hiker Boot"],
                price_mult: 1.7,
            },
            SubCategory { name: "Sandals", code: "SDL", nouns: &["Sandal", "Slide", "Strap Sandal"], price_mult: 0.6 },
            SubCategory { name: "Loafers", code: "LOF", nouns: &["Loafer", "Penny Loafer"], price_mult: 1.4 },
        ],
        median_usd: 95.0,
        sigma: 0.3,
        cycle_days: None,
        brands: &[3, 4, 15, 16],
        descriptors: &["Suede", "Leather", "Canvas", "Recycled Knit", "Black", "Bone", "Tan", "Waxed"],
        tags: &["leather", "vegan", "waterproof", "wide-fit"],
    },
    CategoryDef {
        name: "Accessories",
        handle: "accessories",
        code: "ACC",
        subs: &[
            SubCategory { name: "Hats", code: "HAT", nouns: &["Cap", "Bucket Hat", "Beanie"], price_mult: 1.0 },
            SubCategory { name: "Scarves", code: "SCF", nouns: &["Scarf", "Stole", "Bandana"], price_mult: 1.4 },
            SubCategory { name: "Socks", code: "SCK", nouns: &["Socks", "Crew Socks", "Wool Socks"], price_mult: 0.5 },
            SubCategory {
                name: "Sunglasses",
                code: "SUN",
                nouns: &["Sunglasses", "Round Sunglasses"],
                price_mult: 3.0,
            },
            SubCategory { name: "Jewelry", code: "JWL", nouns: &["Ring", "Pendant", "Hoop Earrings"], price_mult: 2.2 },
        ],
        median_usd: 25.0,
        sigma: 0.45,
        cycle_days: None,
        brands: &[2, 5, 12, 19],
        descriptors: &["Wool", "Silk", "Brass", "Sterling", "Cotton", "Tortoise", "Navy", "Forest"],
        tags: &["gift", "handmade", "limited", "unisex"],
    },
    CategoryDef {
        name: "Skincare",
        handle: "skincare",
        code: "SKN",
        subs: &[
            SubCategory {
                name: "Cleansers",
                code: "CLN",
                nouns: &["Cleansing Oil", "Foam Cleanser", "Cleansing Balm"],
                price_mult: 0.8,
            },
            SubCategory { name: "Serums", code: "SRM", nouns: &["Serum", "Essence", "Ampoule"], price_mult: 1.5 },
            SubCategory {
                name: "Moisturizers",
                code: "MST",
                nouns: &["Moisturizer", "Gel Cream", "Night Cream"],
                price_mult: 1.2,
            },
            SubCategory {
                name: "Sunscreen",
                code: "SPF",
                nouns: &["Sunscreen SPF50", "UV Milk", "Tinted SPF"],
                price_mult: 0.8,
            },
            SubCategory {
                name: "Masks",
                code: "MSK",
                nouns: &["Sheet Mask Set", "Clay Mask", "Sleeping Mask"],
                price_mult: 0.7,
            },
        ],
        median_usd: 32.0,
        sigma: 0.3,
        cycle_days: Some(60.0),
        brands: &[10, 11, 12, 18],
        descriptors: &[
            "Rice Bran",
            "Yuzu",
            "Hinoki",
            "Green Tea",
            "Ceramide",
            "Vitamin C",
            "Fragrance-Free",
            "Camellia",
        ],
        tags: &["vegan", "fragrance-free", "sensitive-skin", "refill"],
    },
    CategoryDef {
        name: "Home",
        handle: "home",
        code: "HOM",
        subs: &[
            SubCategory {
                name: "Candles",
                code: "CND",
                nouns: &["Candle", "Incense Set", "Room Spray"],
                price_mult: 0.8,
            },
            SubCategory {
                name: "Ceramics",
                code: "CER",
                nouns: &["Mug", "Bowl Set", "Vase", "Plate"],
                price_mult: 1.0,
            },
            SubCategory {
                name: "Textiles",
                code: "TEX",
                nouns: &["Throw", "Linen Napkins", "Cushion Cover"],
                price_mult: 1.4,
            },
            SubCategory {
                name: "Kitchen",
                code: "KIT",
                nouns: &["Knife", "Cutting Board", "Donabe Pot"],
                price_mult: 1.8,
            },
        ],
        median_usd: 38.0,
        sigma: 0.45,
        cycle_days: None,
        brands: &[5, 6, 7, 17],
        descriptors: &["Stoneware", "Hinoki", "Linen", "Hand-Thrown", "Speckled", "Smoked Oak", "Indigo", "Sandalwood"],
        tags: &["handmade", "gift", "made-in-japan", "sustainable"],
    },
    CategoryDef {
        name: "Coffee",
        handle: "coffee",
        code: "COF",
        subs: &[
            SubCategory {
                name: "Whole Bean",
                code: "WBN",
                nouns: &["Whole Bean 250g", "Whole Bean 1kg"],
                price_mult: 1.0,
            },
            SubCategory {
                name: "Ground",
                code: "GRD",
                nouns: &["Ground Coffee 250g", "Espresso Grind"],
                price_mult: 0.95,
            },
            SubCategory { name: "Drip Bags", code: "DRP", nouns: &["Drip Bags x10", "Drip Bags x30"], price_mult: 0.9 },
            SubCategory {
                name: "Equipment",
                code: "EQP",
                nouns: &["Pour-Over Dripper", "Hand Grinder", "Gooseneck Kettle"],
                price_mult: 3.0,
            },
        ],
        median_usd: 18.0,
        sigma: 0.3,
        cycle_days: Some(30.0),
        brands: &[8, 9, 17],
        descriptors: &[
            "Ethiopia Guji",
            "Colombia Huila",
            "House Blend",
            "Decaf",
            "Dark Roast",
            "Kenya AA",
            "Seasonal",
            "Light Roast",
        ],
        tags: &["single-origin", "organic", "fair-trade", "subscription-eligible"],
    },
    CategoryDef {
        name: "Bags",
        handle: "bags",
        code: "BAG",
        subs: &[
            SubCategory { name: "Totes", code: "TOT", nouns: &["Tote", "Market Tote", "Canvas Tote"], price_mult: 0.6 },
            SubCategory {
                name: "Backpacks",
                code: "BPK",
                nouns: &["Backpack", "Daypack", "Rolltop Pack"],
                price_mult: 1.4,
            },
            SubCategory {
                name: "Crossbody",
                code: "CRB",
                nouns: &["Crossbody", "Sling Bag", "Mini Shoulder Bag"],
                price_mult: 1.0,
            },
            SubCategory {
                name: "Wallets",
                code: "WLT",
                nouns: &["Wallet", "Card Case", "Coin Purse"],
                price_mult: 0.7,
            },
        ],
        median_usd: 85.0,
        sigma: 0.35,
        cycle_days: None,
        brands: &[4, 7, 13, 19],
        descriptors: &["Waxed Canvas", "Nylon", "Leather", "Recycled", "Black", "Olive", "Sand", "Navy"],
        tags: &["water-resistant", "laptop", "vegan", "gift"],
    },
    CategoryDef {
        name: "Outdoor",
        handle: "outdoor",
        code: "OUT",
        subs: &[
            SubCategory {
                name: "Camping",
                code: "CMP",
                nouns: &["Folding Chair", "Lantern", "Camp Mug"],
                price_mult: 1.2,
            },
            SubCategory {
                name: "Hiking",
                code: "HIK",
                nouns: &["Trekking Poles", "Hiking Shorts", "Fleece"],
                price_mult: 1.3,
            },
            SubCategory {
                name: "Bottles",
                code: "BTL",
                nouns: &["Insulated Bottle", "Tumbler", "Flask"],
                price_mult: 0.5,
            },
            SubCategory {
                name: "Rain Gear",
                code: "RNG",
                nouns: &["Rain Shell", "Packable Poncho", "Rain Hat"],
                price_mult: 1.8,
            },
        ],
        median_usd: 60.0,
        sigma: 0.45,
        cycle_days: None,
        brands: &[1, 14, 15, 16],
        descriptors: &["Ultralight", "Titanium", "Ripstop", "Recycled", "Alpine", "Trail", "Storm", "Sage"],
        tags: &["ultralight", "waterproof", "recycled", "camp"],
    },
];

/// A city people live in. `offset_min` is a fixed UTC offset (DST ignored) used to place sessions at
/// plausible local times of day.
pub(crate) struct City {
    pub city: &'static str,
    pub region: &'static str,
    pub country_code: &'static str,
    pub country_name: &'static str,
    pub timezone: &'static str,
    pub offset_min: i64,
    /// Postal code pattern; `#` becomes a random digit.
    pub postal: &'static str,
    /// Area code / leading digits for landlines.
    pub area: &'static str,
    pub tax_rate: f64,
    pub weight: f64,
}

macro_rules! city {
    ($c:expr, $r:expr, $cc:expr, $cn:expr, $tz:expr, $off:expr, $postal:expr, $area:expr, $tax:expr, $w:expr) => {
        City {
            city: $c,
            region: $r,
            country_code: $cc,
            country_name: $cn,
            timezone: $tz,
            offset_min: $off,
            postal: $postal,
            area: $area,
            tax_rate: $tax,
            weight: $w,
        }
    };
}

/// Roughly 55% Japan, 35% United States, 10% elsewhere.
pub(crate) const CITIES: [City; 29] = [
    city!("Tokyo", "Tokyo", "JP", "Japan", "Asia/Tokyo", 540, "1##-####", "3", 0.10, 18.0),
    city!("Yokohama", "Kanagawa", "JP", "Japan", "Asia/Tokyo", 540, "22#-####", "45", 0.10, 7.0),
    city!("Osaka", "Osaka", "JP", "Japan", "Asia/Tokyo", 540, "53#-####", "6", 0.10, 8.0),
    city!("Nagoya", "Aichi", "JP", "Japan", "Asia/Tokyo", 540, "46#-####", "52", 0.10, 5.0),
    city!("Sapporo", "Hokkaido", "JP", "Japan", "Asia/Tokyo", 540, "06#-####", "11", 0.10, 4.0),
    city!("Fukuoka", "Fukuoka", "JP", "Japan", "Asia/Tokyo", 540, "81#-####", "92", 0.10, 4.0),
    city!("Kobe", "Hyogo", "JP", "Japan", "Asia/Tokyo", 540, "65#-####", "78", 0.10, 3.0),
    city!("Kyoto", "Kyoto", "JP", "Japan", "Asia/Tokyo", 540, "60#-####", "75", 0.10, 3.0),
    city!("Sendai", "Miyagi", "JP", "Japan", "Asia/Tokyo", 540, "98#-####", "22", 0.10, 3.0),
    city!("New York", "New York", "US", "United States", "America/New_York", -300, "100##", "212", 0.08875, 6.0),
    city!("Brooklyn", "New York", "US", "United States", "America/New_York", -300, "112##", "718", 0.08875, 3.0),
    city!("Boston", "Massachusetts", "US", "United States", "America/New_York", -300, "021##", "617", 0.0625, 2.5),
    city!("Chicago", "Illinois", "US", "United States", "America/Chicago", -360, "606##", "312", 0.1025, 3.5),
    city!("Austin", "Texas", "US", "United States", "America/Chicago", -360, "787##", "512", 0.0825, 2.5),
    city!("Denver", "Colorado", "US", "United States", "America/Denver", -420, "802##", "303", 0.0881, 2.0),
    city!("Seattle", "Washington", "US", "United States", "America/Los_Angeles", -480, "981##", "206", 0.1035, 3.0),
    city!(
        "San Francisco",
        "California",
        "US",
        "United States",
        "America/Los_Angeles",
        -480,
        "941##",
        "415",
        0.08625,
        3.0
    ),
    city!("Los Angeles", "California", "US", "United States", "America/Los_Angeles", -480, "900##", "213", 0.095, 5.0),
    city!("Portland", "Oregon", "US", "United States", "America/Los_Angeles", -480, "972##", "503", 0.0, 2.0),
    city!("Honolulu", "Hawaii", "US", "United States", "Pacific/Honolulu", -600, "968##", "808", 0.045, 1.0),
    city!("London", "England", "GB", "United Kingdom", "Europe/London", 0, "E# #AA", "20", 0.0, 2.0),
    city!("Toronto", "Ontario", "CA", "Canada", "America/Toronto", -300, "M#A #A#", "416", 0.0, 1.5),
    city!("Vancouver", "British Columbia", "CA", "Canada", "America/Vancouver", -480, "V#A #A#", "604", 0.0, 1.0),
    city!("Sydney", "New South Wales", "AU", "Australia", "Australia/Sydney", 600, "2###", "2", 0.0, 1.0),
    city!("Berlin", "Berlin", "DE", "Germany", "Europe/Berlin", 60, "10###", "30", 0.0, 0.8),
    city!("Paris", "Ile-de-France", "FR", "France", "Europe/Paris", 60, "750##", "1", 0.0, 0.8),
    city!("Seoul", "Seoul", "KR", "South Korea", "Asia/Seoul", 540, "0####", "2", 0.0, 1.2),
    city!("Singapore", "Singapore", "SG", "Singapore", "Asia/Singapore", 480, "######", "6", 0.0, 1.0),
    city!("Taipei", "Taipei City", "TW", "Taiwan", "Asia/Taipei", 480, "1##", "2", 0.0, 1.0),
];

/// Country calling codes for the countries above.
pub(crate) fn calling_code(country: &str) -> &'static str {
    match country {
        "JP" => "81",
        "US" | "CA" => "1",
        "GB" => "44",
        "AU" => "61",
        "DE" => "49",
        "FR" => "33",
        "KR" => "82",
        "SG" => "65",
        "TW" => "886",
        _ => "1",
    }
}

/// (locale, weight) choices per country.
pub(crate) fn locales(country: &str) -> &'static [(&'static str, f64)] {
    match country {
        "JP" => &[("ja-JP", 0.93), ("en-US", 0.05), ("en-GB", 0.02)],
        "US" => &[("en-US", 0.9), ("es-US", 0.07), ("ja-JP", 0.03)],
        "GB" => &[("en-GB", 1.0)],
        "CA" => &[("en-CA", 0.8), ("fr-CA", 0.2)],
        "AU" => &[("en-AU", 1.0)],
        "DE" => &[("de-DE", 0.9), ("en-US", 0.1)],
        "FR" => &[("fr-FR", 0.9), ("en-US", 0.1)],
        "KR" => &[("ko-KR", 0.95), ("en-US", 0.05)],
        "SG" => &[("en-SG", 0.7), ("zh-SG", 0.3)],
        "TW" => &[("zh-TW", 0.95), ("en-US", 0.05)],
        _ => &[("en-US", 1.0)],
    }
}

pub(crate) const JP_FIRST: [&str; 24] = [
    "Haruto", "Yui", "Sota", "Hina", "Ren", "Yuna", "Riku", "Aoi", "Kenji", "Yuki", "Akiko", "Takashi", "Naoko",
    "Hiroshi", "Emi", "Daichi", "Mei", "Sakura", "Kaito", "Rina", "Shota", "Misaki", "Kazuki", "Ayaka",
];
pub(crate) const JP_LAST: [&str; 24] = [
    "Sato",
    "Suzuki",
    "Takahashi",
    "Tanaka",
    "Watanabe",
    "Ito",
    "Yamamoto",
    "Nakamura",
    "Kobayashi",
    "Kato",
    "Yoshida",
    "Yamada",
    "Sasaki",
    "Yamaguchi",
    "Matsumoto",
    "Inoue",
    "Kimura",
    "Hayashi",
    "Shimizu",
    "Mori",
    "Ikeda",
    "Hashimoto",
    "Ishikawa",
    "Ogawa",
];
pub(crate) const WEST_FIRST: [&str; 28] = [
    "Emma", "Liam", "Olivia", "Noah", "Ava", "James", "Sophia", "Lucas", "Mia", "Ethan", "Isabella", "Mason", "Amelia",
    "Logan", "Harper", "Elijah", "Evelyn", "Daniel", "Grace", "Henry", "Chloe", "Jack", "Maria", "Jose", "Wei",
    "Priya", "Camille", "Lukas",
];
pub(crate) const WEST_LAST: [&str; 28] = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Lee",
    "Nguyen",
    "Patel",
    "Kim",
    "Chen",
    "Walker",
    "Young",
    "Martin",
    "Dubois",
    "Schmidt",
    "Tremblay",
];
pub(crate) const KR_FIRST: [&str; 8] = ["Minjun", "Seoyeon", "Jiwoo", "Hayoon", "Doyoon", "Jiho", "Soyeon", "Hyunwoo"];
pub(crate) const KR_LAST: [&str; 6] = ["Kim", "Lee", "Park", "Choi", "Jung", "Kang"];

pub(crate) const EMAIL_DOMAINS: [(&str, f64); 6] = [
    ("example.com", 0.4),
    ("example.org", 0.15),
    ("example.net", 0.15),
    ("example.jp", 0.15),
    ("mail.example.com", 0.1),
    ("mail.example.jp", 0.05),
];

pub(crate) const JP_STREETS: [&str; 10] = [
    "Jingumae",
    "Ebisu",
    "Nakameguro",
    "Kichijoji",
    "Motomachi",
    "Sakae",
    "Tenjin",
    "Umeda",
    "Sannomiya",
    "Ichibancho",
];
pub(crate) const WEST_STREETS: [&str; 12] = [
    "Maple St",
    "Oak Ave",
    "Pine St",
    "Cedar Ln",
    "Elm St",
    "Harbor Rd",
    "Lakeview Dr",
    "Willow Way",
    "Park Ave",
    "Sunset Blvd",
    "Hillside Ter",
    "Mill Rd",
];

/// Device kinds with their browser user agents.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum DeviceKind {
    Mobile,
    Desktop,
    Tablet,
}

pub(crate) const UA_MOBILE: [&str; 5] = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.107 Mobile Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
];
pub(crate) const UA_DESKTOP: [&str; 5] = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
];
pub(crate) const UA_TABLET: [&str; 2] = [
    "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.107 Safari/537.36",
];

pub(crate) const LIBRARY_VERSIONS: [&str; 3] = ["next-1.70.0", "next-1.72.1", "next-1.76.0"];
pub(crate) const NODE_LIBRARY_VERSION: &str = "2.1.3";

/// Paid/organic campaigns attached to some session starts: (source, medium, name, referrer).
pub(crate) const CAMPAIGNS: [(&str, &str, &str, &str); 9] = [
    ("google", "cpc", "brand_search", "https://www.google.com/"),
    ("google", "cpc", "shopping_feed", "https://www.google.com/"),
    ("instagram", "social", "seasonal_lookbook", "https://l.instagram.com/"),
    ("facebook", "paid_social", "retargeting_dpa", "https://m.facebook.com/"),
    ("line", "social", "line_friends", "https://line.me/"),
    ("tiktok", "paid_social", "creator_collab", "https://www.tiktok.com/"),
    ("yahoo", "display", "awareness_banner", "https://www.yahoo.co.jp/"),
    ("affiliate", "referral", "partner_blog", "https://blog.example.org/"),
    ("google", "organic", "", "https://www.google.com/"),
];

/// Email subjects for the store newsletter, cycled by campaign number.
pub(crate) const EMAIL_SUBJECTS: [&str; 8] = [
    "New arrivals are here",
    "Your weekend edit",
    "Restock alert: customer favourites",
    "Members-only early access",
    "The coffee of the month",
    "Skincare for the season ahead",
    "Last chance: limited pieces",
    "Gift ideas under 50",
];
