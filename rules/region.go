package rules

import (
	"slices"
	"time"
)

// Region returns one region as Regions would list it, and whether it has a
// product with a rule in force now.
func (c *Cache) Region(regionID string) (Region, bool) {
	s := c.snap.Load()
	if s == nil {
		return Region{}, false
	}
	now := time.Now()
	var (
		out     = Region{ID: regionID}
		latest  time.Time
		product string
	)
	for k := range s.rules {
		if k.region != regionID {
			continue
		}
		r, ok := s.get(k, now)
		if !ok {
			continue
		}
		out.Products = append(out.Products, k.product)
		if product == "" || r.EffectiveFrom.After(latest) || (r.EffectiveFrom.Equal(latest) && r.ProductType < product) {
			latest, product, out.Name, out.Currency = r.EffectiveFrom, r.ProductType, r.RegionName, r.Currency
		}
	}
	if len(out.Products) == 0 {
		return Region{}, false
	}
	slices.Sort(out.Products)
	return out, true
}
