//! A step that uses a service from the engine's container.

use workflows_runtime::prelude::*;

/// The application's product catalogue, as a service the steps resolve from the container.
pub struct ProductService {
    products: Vec<String>,
}

impl ProductService {
    /// A catalogue of these products.
    pub fn new(products: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self { products: products.into_iter().map(Into::into).collect() }
    }

    /// How many products there are.
    pub fn count(&self) -> usize {
        self.products.len()
    }
}

/// The output of [`product_count()`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductCount {
    /// The number of products.
    pub count: usize,
}

#[step]
async fn count_products(ctx: &StepContext) -> Result<usize, StepError> {
    let products = ctx.resolve::<ProductService>()?;
    Ok(products.count())
}

/// Counts the products of the [`ProductService`] in the container.
#[workflow]
pub async fn product_count(wf: &Workflow, _input: ()) -> Result<ProductCount, WorkflowError> {
    let count = count_products(wf).await?;
    Ok(ProductCount { count })
}
