use kizuna_catalog::Product;
use std::collections::HashMap;
use std::sync::Arc;

/// A product's dense index: counters and models are vectors indexed by it.
pub type ItemIx = u32;

/// Every product known to recommendations: the catalog's, and products that events mention before (or
/// without) a catalog import — those carry what the event said (name, price, category, brand) and are marked
/// `in_catalog = false`.
#[derive(Debug, Clone, Default)]
pub struct ItemIndex {
    items: Vec<Item>,
    by_id: HashMap<Arc<str>, ItemIx>,
    by_category: HashMap<String, Vec<ItemIx>>,
}

#[derive(Debug, Clone)]
pub struct Item {
    pub product: Arc<Product>,
    pub in_catalog: bool,
}

impl ItemIndex {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn ix(&self, id: &str) -> Option<ItemIx> {
        self.by_id.get(id).copied()
    }

    pub fn item(&self, ix: ItemIx) -> &Item {
        &self.items[ix as usize]
    }

    pub fn product(&self, ix: ItemIx) -> &Product {
        &self.items[ix as usize].product
    }

    pub fn iter(&self) -> impl Iterator<Item = (ItemIx, &Item)> {
        self.items.iter().enumerate().map(|(i, item)| (i as ItemIx, item))
    }

    /// Products in a category (as the catalog names it), in index order.
    pub fn in_category(&self, category: &str) -> &[ItemIx] {
        self.by_category.get(category).map_or(&[], Vec::as_slice)
    }

    /// Adds or replaces a catalog product; returns its index.
    pub fn upsert(&mut self, product: Product) -> ItemIx {
        self.put(product, true)
    }

    /// The index of a product an event mentions; an unknown id gets an entry built from the event's fields.
    /// A catalog entry always wins over what events say.
    pub fn observe(&mut self, id: &str, from_event: impl FnOnce() -> Product) -> ItemIx {
        match self.ix(id) {
            Some(ix) => ix,
            None => self.put(from_event(), false),
        }
    }

    fn put(&mut self, product: Product, in_catalog: bool) -> ItemIx {
        match self.by_id.get(product.id.as_str()).copied() {
            Some(ix) => {
                let old = &self.items[ix as usize];
                for c in &old.product.categories {
                    if let Some(list) = self.by_category.get_mut(c) {
                        list.retain(|&i| i != ix);
                    }
                }
                for c in &product.categories {
                    let list = self.by_category.entry(c.clone()).or_default();
                    let at = list.partition_point(|&i| i < ix);
                    list.insert(at, ix);
                }
                self.items[ix as usize] = Item { product: Arc::new(product), in_catalog };
                ix
            }
            None => {
                let ix = self.items.len() as ItemIx;
                for c in &product.categories {
                    self.by_category.entry(c.clone()).or_default().push(ix);
                }
                self.by_id.insert(Arc::from(product.id.as_str()), ix);
                self.items.push(Item { product: Arc::new(product), in_catalog });
                ix
            }
        }
    }
}

/// A product as an e-commerce spec event describes it (`product_id`/`sku`, `name`, `price`, `category`,
/// `brand`, `url`, `image_url`), for products the catalog does not have.
pub fn product_from_event(id: &str, properties: &serde_json::Value) -> Product {
    let text = |key: &str| properties.get(key).and_then(serde_json::Value::as_str).map(str::to_owned);
    let price = properties
        .get("price")
        .and_then(|v| v.as_f64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())))
        .filter(|p: &f64| p.is_finite() && *p >= 0.0)
        .unwrap_or(0.0);
    Product {
        id: id.to_owned(),
        sku: text("sku"),
        title: text("name").unwrap_or_else(|| id.to_owned()),
        url: text("url"),
        image: text("image_url"),
        price,
        currency: text("currency").filter(|c| c.len() == 3).unwrap_or_else(|| "USD".to_owned()),
        compare_at_price: None,
        categories: text("category").into_iter().collect(),
        brand: text("brand"),
        tags: Vec::new(),
        in_stock: true,
        created_at: None,
    }
}
